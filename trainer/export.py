"""Export a checkpoint: `python -m trainer.export CHECKPOINT OUT --format tcl|official|hf`.

CHECKPOINT is anything `model.init` reads (a step directory of any world size, a checkpoints directory, a
tcl export, an official TCL/ALBEF .pth). OUT is a file for tcl (.safetensors) and official (.pth), a
directory for hf. Formats: see trainer.weights.export.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trainer.config import ConfigError, load


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="step directory, checkpoints directory, tcl export or official .pth")
    parser.add_argument("out", type=Path, help="output file (tcl, official) or directory (hf)")
    parser.add_argument("--format", required=True, choices=("tcl", "official", "hf"))
    parser.add_argument("--config", default="pretrain_4m",
                        help="architecture of a checkpoint that carries no config of ours (official .pth): a YAML"
                             " file or preset (default pretrain_4m, the paper's)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of that config")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from trainer.model.pretrained import WeightLoadError
    from trainer.weights.export import WRITERS
    from trainer.weights.load import KNOWN_LAYOUTS, read_checkpoint
    from trainer.weights.state import check_fits

    try:
        checkpoint = read_checkpoint(args.checkpoint)
        cfg = checkpoint.config or load(args.config, args.overrides)
        check_fits(checkpoint.state, cfg, f"{checkpoint.source} ({checkpoint.layout})", KNOWN_LAYOUTS)
        out = WRITERS[args.format](checkpoint, cfg, args.out)
    except (WeightLoadError, ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.format}, from the {checkpoint.layout} {checkpoint.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
