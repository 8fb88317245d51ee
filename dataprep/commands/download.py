"""`tcl-dataprep download OUT --source format=cc3m,path=Train_GCC-training.tsv`: image URLs -> WebDataset shards."""

from __future__ import annotations

import argparse
import sys

# flag dest -> DownloadConfig field
_FLAGS = ("concurrency", "per_host_connections", "per_host_rate", "timeout", "retries", "backoff", "max_bytes",
          "chunk_size")


def download_command_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "download", help="fetch the images of a URL list (CC3M, SBU, LAION parquet) into WebDataset shards",
        description="Fetch the images of a URL list into WebDataset tar shards (img2dataset's layout) that "
        "`convert --source format=webdataset,path=OUT` turns into MDS. Resumable: rerun the same command after "
        "a crash; nothing already fetched is fetched again.",
        epilog="exit status 0: done (rejects are in OUT/rejects.jsonl); 2: bad input",
    )
    parser.add_argument("out", help="local output folder")
    parser.add_argument("--source", required=True, metavar="KEY=VALUE,...",
                        help="the URL list: format=cc3m|sbu|parquet|tsv|csv|jsonl,path=P[,name=N][,image_column=C]"
                        "[,caption_column=C][,columns=A,B,...]")
    parser.add_argument("--concurrency", type=int, help="requests in flight over all hosts (default 32)")
    parser.add_argument("--per-host-connections", type=int, help="requests in flight to one host (default 4)")
    parser.add_argument("--per-host-rate", type=float, help="request starts per second to one host (default 10)")
    parser.add_argument("--timeout", type=float, help="seconds per request, body included (default 10)")
    parser.add_argument("--retries", type=int, help="retries of timeouts, connection errors, 429, 5xx (default 2)")
    parser.add_argument("--backoff", type=float, help="seconds before the first retry, doubling (default 1)")
    parser.add_argument("--max-bytes", type=int, help="larger images are rejected (default 64 MiB)")
    parser.add_argument("--chunk-size", type=int, help="records per shard (default 1000)")
    parser.add_argument("--ignore-opt-out", action="store_true",
                        help="fetch what X-Robots-Tag (noai, noimageai, noindex, noimageindex) or robots.txt opts out")
    parser.set_defaults(run=run_download)
    return parser


def run_download(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from dataprep.commands.convert import UsageError, _parse_source
    from dataprep.commands.table import format_table
    from dataprep.download import REJECTS_NAME, DownloadConfig, download
    from dataprep.sources import SourceError, count_source

    try:
        fields = {name: getattr(args, name) for name in _FLAGS if getattr(args, name) is not None}
        config = DownloadConfig(out=args.out, source=_parse_source(args.source), honour_opt_out=not args.ignore_opt_out,
                                **fields)
        total = count_source(config.source, allow_urls=True)
        with logging_redirect_tqdm(), tqdm(total=total, unit="img", dynamic_ncols=True, delay=0.5) as bar:
            result = download(config, progress=bar)
    except (ValidationError, UsageError, SourceError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = [["accepted", result.accepted], *([f"rejected:{r}", n] for r, n in result.rejected.items())]
    print(format_table(["records", "count"], rows))
    print(f"{result.out}: {result.shards} shards (rejects: {result.out}/{REJECTS_NAME})")
    return 0
