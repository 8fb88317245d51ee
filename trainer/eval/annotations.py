"""A retrieval split in the official annotation format (coco_test.json, flickr30k_test.json of the Karpathy
splits): a JSON list of {"image": path relative to an image root, "caption": [captions]}.

Captions are cleaned and numbered as the official re_eval_dataset does (in file order, image by image);
images are resized to S x S (bicubic) and normalised as for the in-loop evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from dataprep.captions import pre_caption
from trainer.data.dataset import RetrievalData
from trainer.data.transforms import EvalTransform


class AnnotationError(ValueError):
    """An annotation file or image root that cannot be evaluated; the message names the entry."""


def read_annotations(path: Path, image_root: Path) -> list[tuple[Path, list[str]]]:
    """(image file, captions) per entry; every problem (format, a missing image) is found before any work."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"annotation file {path}: cannot be read as JSON: {err}") from None
    if not isinstance(entries, list) or not entries:
        raise AnnotationError(f"annotation file {path}: expected a non-empty JSON list of {{'image', 'caption'}}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise AnnotationError(f"annotation file {path}: entry {i} has no 'image' path (official retrieval format)")
        captions = entry.get("caption")
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise AnnotationError(
                f"annotation file {path}: entry {i} ({entry['image']}): 'caption' must be a non-empty list of strings"
            )
        out.append((image_root / entry["image"], captions))
    missing = [str(image) for image, _ in out if not image.is_file()]
    if missing:
        raise AnnotationError(
            f"image root {image_root}: {len(missing)} of {len(out)} images are missing, e.g. {missing[0]}"
        )
    return out


class ImageFiles(Dataset):
    def __init__(self, files: list[Path], img_size: int) -> None:
        self.files = files
        self.transform = EvalTransform(img_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            return self.transform(self.files[index].read_bytes())
        except (OSError, ValueError) as err:
            raise AnnotationError(f"image {self.files[index]}: cannot be decoded: {err}") from None


def annotation_split(
    path: Path, image_root: Path, *, img_size: int, max_words: int, batch_size: int, num_workers: int = 0
) -> RetrievalData:
    entries = read_annotations(path, image_root)
    texts: list[str] = []
    img2txt: list[list[int]] = []
    txt2img: list[int] = []
    for index, (_, captions) in enumerate(entries):
        img2txt.append(list(range(len(texts), len(texts) + len(captions))))
        txt2img.extend([index] * len(captions))
        texts.extend(pre_caption(c, max_words) for c in captions)
    images = DataLoader(
        ImageFiles([image for image, _ in entries], img_size), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, pin_memory=torch.cuda.is_available(),
    )
    return RetrievalData(images=images, texts=texts, img2txt=img2txt, txt2img=txt2img)
