"""`tcl-dataprep convert OUT --source format=tsv,path=cc3m.tsv,image_root=cc3m/ ...`"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_EXIT_STATUSES = "exit status 0: done; 1: more rejects than allowed (the datasets are complete); 2: bad input"

# flag dest -> where its value goes in ConvertConfig
_FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "workers": ("workers",),
    "chunk_size": ("chunk_size",),
    "batch_size": ("batch_size",),
    "max_words": ("max_words",),
    "eval_fraction": ("eval_fraction",),
    "seed": ("seed",),
    "max_reject_fraction": ("max_reject_fraction",),
    "max_reject_count": ("max_reject_count",),
    "max_short_side": ("images", "max_short_side"),
    "quality": ("images", "quality"),
    "min_side": ("images", "min_side"),
    "max_aspect_ratio": ("images", "max_aspect_ratio"),
    "max_pixels": ("images", "max_pixels"),
    "max_file_bytes": ("limits", "max_file_bytes"),
    "max_record_bytes": ("limits", "max_record_bytes"),
    "max_caption_bytes": ("limits", "max_caption_bytes"),
    "compression": ("shards", "compression"),
}


def convert_command_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert", help="convert corpora to MDS shards (local folder or s3://bucket/prefix)",
        description="Convert image-text corpora to MDS datasets. Resumable: rerun the same command after a "
        "crash to continue; a finished job is not redone.", epilog=_EXIT_STATUSES,
    )
    parser.add_argument("out", nargs="?", help="output folder or s3://bucket/prefix (or `out` in --config)")
    parser.add_argument("--config", type=Path, help="YAML/JSON with ConvertConfig fields; flags override it")
    parser.add_argument(
        "--source", action="append", metavar="KEY=VALUE,...",
        help="a corpus: format=albef_json|coco|csv|tsv|jsonl|webdataset,path=P[,image_root=DIR][,name=N]"
        "[,image_column=C][,caption_column=C][,columns=A,B,... (a table without header)][,allow_outside_root=true]"
        "; repeat for several",
    )
    parser.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    parser.add_argument("--chunk-size", type=int, help="records per chunk, the unit of resume (default 10000)")
    parser.add_argument("--batch-size", type=int, help="records per worker task (default 32)")
    parser.add_argument("--max-short-side", type=int, help="shrink images so the shorter side is at most this")
    parser.add_argument("--quality", type=int, help="JPEG quality of re-encoded images (default 90)")
    parser.add_argument("--min-side", type=int, help="reject images with a shorter side (default 10)")
    parser.add_argument("--max-aspect-ratio", type=float, help="reject images more elongated (default 10)")
    parser.add_argument("--max-pixels", type=int, help="reject images with more pixels, before decoding (default 1e8)")
    parser.add_argument("--max-file-bytes", type=int, help="reject larger image files / tar members (default 64 MiB)")
    parser.add_argument("--max-record-bytes", type=int, help="reject larger JSON records / lines (default 1 MiB)")
    parser.add_argument("--max-caption-bytes", type=int, help="reject records with a longer caption (default 16 KiB)")
    parser.add_argument("--max-words", type=int, help="captions keep at most this many words (default 30)")
    parser.add_argument("--shard-size-mib", type=int, help="MiB of rows per shard (default 64)")
    parser.add_argument("--compression", help="shard compression, e.g. zstd (default none)")
    parser.add_argument("--eval-fraction", type=float, help="hold out this fraction of images: OUT/train, OUT/eval")
    parser.add_argument("--seed", type=int, help="seed of the held-out split (default 0)")
    parser.add_argument("--max-reject-fraction", type=float, help="exit 1 if a larger fraction is rejected")
    parser.add_argument("--max-reject-count", type=int, help="exit 1 if more records are rejected")
    parser.add_argument("--overwrite", action="store_true", help="delete a previous output at OUT and start fresh")
    parser.set_defaults(run=run_convert)
    return parser


class UsageError(ValueError):
    """A flag's value cannot be read."""


def _parse_source(text: str) -> dict[str, str]:
    """`format=tsv,path=P,columns=caption,url`: a part without `=` continues the previous value (a list)."""
    fields: dict[str, str] = {}
    key = None
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if sep:
            key = name.strip()
            fields[key] = value.strip()
        elif key == "columns":
            fields[key] += "," + part.strip()
        else:
            raise UsageError(f"--source {text!r}: expected KEY=VALUE pairs separated by commas, got {part!r}")
    return fields


def config_data(args: argparse.Namespace) -> dict[str, Any]:
    """ConvertConfig fields from --config, then the flags given on the command line."""
    import yaml

    try:
        data: dict[str, Any] = (yaml.safe_load(args.config.read_text()) or {}) if args.config else {}
    except yaml.YAMLError as error:
        raise UsageError(f"--config {args.config}: not YAML/JSON: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {args.config}: expected a mapping of ConvertConfig fields")
    if args.out:
        data["out"] = args.out
    if args.source:
        data["sources"] = [_parse_source(text) for text in args.source]
    if args.overwrite:
        data["overwrite"] = True
    if args.shard_size_mib is not None:
        data.setdefault("shards", {})["size_limit"] = args.shard_size_mib << 20
    for dest, path in _FLAG_FIELDS.items():
        value = getattr(args, dest)
        if value is not None:
            section = data
            for key in path[:-1]:
                section = section.setdefault(key, {})
            section[path[-1]] = value
    return data


def _print_summary(result: Any) -> None:
    from dataprep.commands.table import format_bytes, format_table
    from dataprep.schema import REJECTS_NAME
    from dataprep.storage import join

    reasons = sorted({reason for d in result.datasets.values() for reason in d.manifest.rejected})
    rows = [
        [split, d.manifest.samples, len(d.manifest.shards), format_bytes(d.manifest.total_bytes),
         *(d.manifest.rejected.get(reason, 0) for reason in reasons)]
        for split, d in result.datasets.items()
    ]
    print(format_table(["split", "accepted", "shards", "size", *(f"rejected:{r}" for r in reasons)], rows))
    for split, d in result.datasets.items():
        print(f"{split}: {d.location} (reject report: {join(d.location, REJECTS_NAME)})")


def run_convert(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from dataprep.convert import ConvertConfig, convert
    from dataprep.job import JobError
    from dataprep.sources import SourceError

    try:
        config = ConvertConfig.model_validate(config_data(args))
        with logging_redirect_tqdm(), tqdm(unit="rec", dynamic_ncols=True, smoothing=0.05, delay=0.5) as bar:
            result = convert(config, progress=bar)
    except (ValidationError, UsageError, SourceError, JobError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if result.already_complete:
        print(f"{config.out}: already complete, nothing to do (pass --overwrite to redo it)")
    _print_summary(result)
    if result.reject_limit_error:
        print(f"error: {result.reject_limit_error}", file=sys.stderr)
        return 1
    return 0
