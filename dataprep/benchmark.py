"""Throughput of the conversion pipeline next to bare Pillow on the same images (a script, not a test).

    python -m dataprep.benchmark --images 400 --workers 1 2

Prints records/s (and CPU time per record, which a busy machine does not distort) for: a bare Pillow loop (open, RGB, resize, JPEG encode), the pipeline's own image
step in a loop (`process_image`: the same work plus validation), and full conversions to MDS with 1,
2, ... worker processes (sources, worker pool, ordering, duplicate check, MDS writing, manifest). The
gap between the loops and a 1-worker conversion is the pipeline's overhead; the worker rows show scaling.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from dataprep.cli import configure_logging
from dataprep.commands.table import format_table
from dataprep.images import ImageOptions, process_image, target_size


def photo_like(seed: int, width: int, height: int) -> Image.Image:
    """Shapes, blur and noise: a JPEG about as costly to decode and as large as a web photo."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(30):
        x, y = rng.randrange(width), rng.randrange(height)
        box = (x, y, x + rng.randrange(20, width // 2), y + rng.randrange(20, height // 2))
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    noise = Image.effect_noise((width, height), 40).convert("RGB")
    return Image.blend(image.filter(ImageFilter.GaussianBlur(2)), noise, 0.15)


def make_corpus(folder: Path, count: int, width: int, height: int) -> Path:
    """count JPEGs and an ALBEF-style JSON listing them; returns the JSON's path."""
    (folder / "images").mkdir(parents=True)
    entries = []
    for i in range(count):
        photo_like(i, width, height).save(folder / "images" / f"{i}.jpg", "JPEG", quality=90)
        entries.append({"image": f"images/{i}.jpg", "caption": f"Benchmark photo number {i}."})
    path = folder / "corpus.json"
    path.write_text(json.dumps(entries))
    return path


def bare_pillow(paths: list[Path], options: ImageOptions) -> None:
    for path in paths:
        image = Image.open(path).convert("RGB")
        size = target_size(image.width, image.height, options.max_short_side)
        if size is not None:
            image = image.resize(size, Image.Resampling.BICUBIC)
        image.save(io.BytesIO(), "JPEG", quality=options.quality)


def image_step(paths: list[Path], options: ImageOptions) -> None:
    for path in paths:
        process_image(path.read_bytes(), options)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the conversion's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(run: Callable[[], object], count: int) -> tuple[float, float]:
    """(records per wall-clock second, CPU milliseconds per record): the second holds on a busy machine."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    run()
    return count / (time.perf_counter() - wall), 1000 * (_cpu_seconds() - cpu) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--max-short-side", type=int, default=256, help="the resize bound (0: keep sizes)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", help="where conversions go (a folder or s3:// prefix; default: a temp folder)")
    args = parser.parse_args(argv)
    configure_logging(verbose=False)

    from dataprep.convert import ConvertConfig, convert
    from dataprep.sources import SourceSpec
    from dataprep.storage import join

    options = ImageOptions(max_short_side=args.max_short_side or None)
    with tempfile.TemporaryDirectory(prefix="dataprep-bench-") as temp:
        corpus = make_corpus(Path(temp), args.images, args.width, args.height)
        paths = [Path(temp, "images", f"{i}.jpg") for i in range(args.images)]
        runs: list[tuple[str, Callable[[], object]]] = [
            ("bare Pillow loop (open, RGB, resize, JPEG)", partial(bare_pillow, paths, options)),
            ("process_image loop (validate, draft decode, resize, JPEG)", partial(image_step, paths, options)),
        ]
        for workers in args.workers:
            config = ConvertConfig(
                out=join(args.out or temp, f"out-{workers}"), images=options, workers=workers, overwrite=True,
                sources=[SourceSpec(format="albef_json", path=str(corpus))],
            )
            runs.append((f"convert to MDS, {workers} worker(s)", partial(convert, config)))
        rows = [(name, *measure(run, args.images)) for name, run in runs]
    base = rows[0][1]
    print(f"{args.images} JPEGs of {args.width}x{args.height}, shorter side bound {args.max_short_side}:")
    print(format_table(
        ["method", "records/s", "vs bare", "CPU ms/record"],
        [[name, round(rate, 1), f"{rate / base:.2f}x", round(cpu, 2)] for name, rate, cpu in rows],
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
