"""`tcl-dataprep inspect LOCATION`: samples, shards, bytes, caption statistics and a few examples."""

from __future__ import annotations

import argparse
import sys


def inspect_command_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "inspect", help="summarise a dataset", description="Summarise a finished dataset (local or s3://)."
    )
    parser.add_argument("location", help="dataset folder or s3://bucket/prefix (the one holding manifest.json)")
    parser.add_argument("--examples", type=int, default=5, help="rows to show (default 5)")
    parser.add_argument("--max-rows", type=int, help="compute the statistics over at most this many rows")
    parser.set_defaults(run=run_inspect)
    return parser


def run_inspect(args: argparse.Namespace) -> int:
    from dataprep.commands.table import format_bytes, format_table
    from dataprep.reader import DatasetError
    from dataprep.summary import summarize

    try:
        summary = summarize(args.location, examples=args.examples, max_rows=args.max_rows)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{summary.location}: {summary.samples} samples in {summary.shards} shards, {format_bytes(summary.bytes)}")
    print(format_table(["source", "accepted"], sorted(summary.accepted_by_source.items())))
    if summary.rejected:
        print(format_table(["rejected", "count"], sorted(summary.rejected.items())))
    stats = {
        "captions per row": summary.captions_per_row, "words per caption": summary.words_per_caption,
        "width": summary.width, "height": summary.height,
    }
    print(f"statistics over {summary.rows_read} rows:")
    print(format_table(["", "min", "mean", "max"], [[n, s.min, round(s.mean, 2), s.max] for n, s in stats.items()]))
    for example in summary.examples:
        print(f"- {example.sample_id} ({example.width}x{example.height}): {example.caption}")
    return 0
