"""`tcl-dataprep verify LOCATION`: re-hash every shard and fail on any mismatch with the manifest."""

from __future__ import annotations

import argparse
import sys


def verify_command_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "verify", help="re-check every shard's sha256", epilog="exit status 0: intact; 1: mismatch; 2: no dataset",
        description="Re-check every shard of a finished dataset (local or s3://) against its manifest.",
    )
    parser.add_argument("location", help="dataset folder or s3://bucket/prefix (the one holding manifest.json)")
    parser.set_defaults(run=run_verify)
    return parser


def run_verify(args: argparse.Namespace) -> int:
    from dataprep.commands.table import format_bytes
    from dataprep.reader import DatasetError
    from dataprep.verify import verify_dataset

    try:
        report = verify_dataset(args.location)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    verdict = "intact" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"{report.location}: {report.shards_checked} shards, {format_bytes(report.bytes_checked)} checked: {verdict}")
    return 0 if report.ok else 1
