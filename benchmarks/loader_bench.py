"""The CPU half of the data path beside the official two-view torchvision pipeline, in one process.

    python -m benchmarks.loader_bench [--sizes 640x480,256x256] [--workers 1,2] [--batch 64] [--batches 4]

Both pipelines read the same synthetic JPEGs (made with PIL in a temp folder) through a DataLoader
with the same workers, batch and tokenizer; only the image path differs:
- ours: `TwoViewTransform` (draft decode, RandomResizedCrop, flip; colour and RandAugment are drawn
  here and applied later on the device) and the loader's `Collate` (tokenize, stack uint8 views);
- official: TCL's pretraining transform re-implemented with torchvision.transforms (RandomResizedCrop
  256 scale 0.2-1 bicubic, ColorJitter 0.4/0.4/0.4/0.1 p=0.8, grayscale 0.2, blur p=0.5 sigma 0.1-2
  (PIL's, as the official code), flip, RandAugment(2, 7) over TCL's op list, each op p=0.5, ToTensor,
  normalise), two views drawn independently, the same tokenizer in the collate.
Per core = per loader worker (each worker is one process on one core). Figures are relative: run
the two side by side, on the same machine and load, and read the ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as F

from dataprep.captions import pre_caption
from trainer.config import AugmentConfig
from trainer.data.loader import Collate, tokenize
from trainer.data.seeding import sample_rng
from trainer.data.tokenizer import load_tokenizer
from trainer.data.transforms import CLIP_MEAN, CLIP_STD, TwoViewTransform

CAPTION = "a photo of a small dog running across the green grass next to a red ball in the park"
RANDAUGMENT_OPS = (
    "Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness",
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
)


def make_jpegs(folder: Path, size: tuple[int, int], count: int, seed: int = 0) -> list[Path]:
    """Photo-like JPEGs (smooth colour fields plus noise, quality 90): a flat image decodes unrealistically fast."""
    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
        pixels = np.clip(field + rng.integers(-24, 25, field.shape), 0, 255).astype(np.uint8)
        path = folder / f"{width}x{height}_{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


class RandomAugment:
    """TCL's RandomAugment(2, 7, isPIL=True) on PIL images: N ops drawn uniformly from RANDAUGMENT_OPS, each
    applied with probability 0.5 at magnitude M/10 (shear 0.3, translate 10 px... x M/10, rotate 30 deg
    x M/10, enhance factor 1.8 x M/10 + 0.1; geometric ops take a random sign)."""

    def __init__(self, n: int = 2, m: int = 7, p: float = 0.5) -> None:
        self.n, self.level, self.p = n, m / 10, p

    def __call__(self, image: Image.Image) -> Image.Image:
        for op in random.choices(RANDAUGMENT_OPS, k=self.n):
            if random.random() < self.p:
                image = self.apply(op, image)
        return image

    def apply(self, op: str, image: Image.Image) -> Image.Image:
        sign = random.choice((-1.0, 1.0))
        fill = [128, 128, 128]
        if op == "AutoContrast":
            return F.autocontrast(image)
        if op == "Equalize":
            return F.equalize(image)
        if op == "Brightness":
            return F.adjust_brightness(image, 1.8 * self.level + 0.1)
        if op == "Sharpness":
            return F.adjust_sharpness(image, 1.8 * self.level + 0.1)
        if op in ("ShearX", "ShearY"):
            shear = float(np.degrees(np.arctan(sign * 0.3 * self.level)))
            shears = [shear, 0.0] if op == "ShearX" else [0.0, shear]
            return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=shears, fill=fill)
        if op in ("TranslateX", "TranslateY"):
            offset = int(sign * 10 * self.level)
            shift = [offset, 0] if op == "TranslateX" else [0, offset]
            return F.affine(image, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], fill=fill)
        if op == "Rotate":
            return F.rotate(image, sign * 30 * self.level, fill=fill)
        return image  # Identity


class GaussianBlur:
    """The official blur (MoCo v2's): PIL's Gaussian blur with sigma ~ U(low, high). torchvision's GaussianBlur
    (a 23-tap tensor convolution) would be several times dearer and overstate the official cost."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.low, self.high)))


def official_transform(img_size: int) -> T.Compose:
    """TCL's pretrain transform (configs/Pretrain.yaml + dataset/__init__.py), in torchvision ops."""
    return T.Compose([
        T.RandomResizedCrop(img_size, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([GaussianBlur(0.1, 2.0)], p=0.5),
        T.RandomHorizontalFlip(),
        RandomAugment(2, 7),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


class JpegDataset(Dataset):
    """Encoded JPEGs in memory -> one sample of the given pipeline (read once, so disk is not timed)."""

    def __init__(self, paths: Sequence[Path], sample: Callable[[bytes, int], dict[str, Any]]) -> None:
        self.images = [p.read_bytes() for p in paths]
        self.sample = sample

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(self.images[index], index)


class OurSample:
    """PretrainDataset.get_item's work without the MDS read: the two views from (seed, epoch, sample id)."""

    def __init__(self, img_size: int) -> None:
        self.transform = TwoViewTransform(AugmentConfig(), img_size)

    def __call__(self, data: bytes, index: int) -> dict[str, Any]:
        rngs = [sample_rng(0, 0, str(index), stream) for stream in ("view0", "view1")]
        images, params = self.transform(data, rngs)
        return {"image_u8": images, "aug_params": params, "caption": pre_caption(CAPTION, 30), "index": index}


class OfficialSample:
    """The official dataset's __getitem__: decode with PIL, two independent draws of the transform."""

    def __init__(self, img_size: int) -> None:
        self.transform = official_transform(img_size)

    def __call__(self, data: bytes, index: int) -> dict[str, Any]:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return {"views": torch.stack([self.transform(image), self.transform(image)]),
                "caption": pre_caption(CAPTION, 30)}


class OfficialCollate:
    """Stack the float views and tokenize the captions with the same tokenizer as ours."""

    def __init__(self, tokenizer: Any, max_tokens: int) -> None:
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = tokenize([s["caption"] for s in samples], self.tokenizer, self.max_tokens)
        return {"images": torch.stack([s["views"] for s in samples], dim=1),
                "input_ids": input_ids, "attention_mask": attention_mask}


def loader_rate(dataset: Dataset, collate: Callable[..., Any], *, workers: int, batch: int, batches: int) -> float:
    """Samples/s over `batches` batches after one untimed batch per worker (start-up, first imports)."""
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate,
                        sampler=[i % len(dataset) for i in range(batch * (batches + workers))])
    it = iter(loader)
    for _ in range(workers):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batch * batches / (time.perf_counter() - start)
    del it
    return rate


def parse_size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="640x480,256x256", help="comma-separated JPEG sizes WxH")
    parser.add_argument("--workers", default="1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=4, help="timed batches per row and pipeline")
    parser.add_argument("--images", type=int, default=64, help="distinct JPEGs per size (the sampler cycles over them)")
    parser.add_argument("--img-size", type=int, default=256, help="the view resolution")
    parser.add_argument("--tokenizer", default="bert-base-uncased")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(args.tokenizer)
    ours_collate, official_collate = Collate(tokenizer, 25, False), OfficialCollate(tokenizer, 25)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(parse_size, args.sizes.split(",")):
            paths = make_jpegs(Path(tmp), size, args.images)
            ours = JpegDataset(paths, OurSample(args.img_size))
            official = JpegDataset(paths, OfficialSample(args.img_size))
            for workers in map(int, args.workers.split(",")):
                kw = {"workers": workers, "batch": args.batch, "batches": args.batches}
                official_rate = loader_rate(official, official_collate, **kw)
                ours_rate = loader_rate(ours, ours_collate, **kw)
                rows.append({"jpeg": f"{size[0]}x{size[1]}", "workers": workers, "official": official_rate,
                             "ours": ours_rate, "ratio": ours_rate / official_rate})
    print(format_table(rows, args.batch))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def format_table(rows: list[dict[str, Any]], batch: int) -> str:
    lines = [f"two views of 256 px, batch {batch}; samples/s (and per worker core)",
             f"{'jpeg':>9} {'workers':>7} {'official':>9} {'/core':>9} {'ours':>9} {'/core':>9} {'ratio':>7}"]
    for r in rows:
        w = r["workers"]
        lines.append(f"{r['jpeg']:>9} {w:>7} {r['official']:>9.1f} {r['official'] / w:>9.1f}"
                     f" {r['ours']:>9.1f} {r['ours'] / w:>9.1f} {r['ratio']:>6.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
