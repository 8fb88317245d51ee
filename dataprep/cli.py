"""The `tcl-dataprep` / `python -m dataprep` command line: one subcommand per module in dataprep.commands.

Subcommand modules import the heavy libraries (streaming imports torch) only when they run, so
`--help` is instant and spawned conversion workers that re-import the entry point stay light.
"""

from __future__ import annotations

import argparse
import logging

from dataprep.commands.convert import convert_command_parser
from dataprep.commands.download import download_command_parser
from dataprep.commands.inspect import inspect_command_parser
from dataprep.commands.synth import synth_command_parser
from dataprep.commands.verify import verify_command_parser


class _OwnLogsOnly(logging.Filter):
    """Show dataprep's log lines; of other libraries (streaming warns about normal operation) only errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("dataprep") or record.levelno >= logging.ERROR


def configure_logging(verbose: bool) -> None:
    """Log lines to stderr for a command-line run (dataprep's at INFO, other libraries' errors only)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_OwnLogsOnly())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcl-dataprep", description="Image-text corpora to MosaicML Streaming (MDS) shards, local or on S3."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs, other libraries' included")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in (convert_command_parser, download_command_parser, inspect_command_parser, verify_command_parser,
                       synth_command_parser):
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; returns the exit status (0 ok, 1 failed check, 2 bad input)."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return args.run(args)
