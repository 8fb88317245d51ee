"""`tcl-dataprep synth OUT --train N --eval M [--seed S] [--size PX]`: the synthetic demo corpus."""

from __future__ import annotations

import argparse
import sys


def synth_command_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth", help="write the synthetic demo corpus (OUT/train, OUT/eval)",
        description="Write a synthetic shapes-and-colours corpus as MDS: OUT/train and OUT/eval (replaced "
        "if OUT holds an earlier dataprep output).",
    )
    parser.add_argument("out", help="output folder or s3://bucket/prefix")
    parser.add_argument("--train", type=int, required=True, help="training images")
    parser.add_argument("--eval", type=int, required=True, help="held-out images (5 captions each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    parser.set_defaults(run=run_synth)
    return parser


def run_synth(args: argparse.Namespace) -> int:
    from dataprep.job import JobError
    from dataprep.synth import write_demo_corpus

    try:
        write_demo_corpus(args.out, args.train, args.eval, seed=args.seed, size=args.size)
    except (ValueError, JobError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {args.train} train and {args.eval} eval images")
    return 0
