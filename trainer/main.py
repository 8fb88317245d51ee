"""Train TCL: `deepspeed trainer/main.py --config configs/tiny.yaml [key=value ...] [--resume auto]`.

Parses the config (failing before anything heavy starts), initialises the process group, runs the
Trainer. Everything else lives in the `trainer` package.
"""

from __future__ import annotations

import os
import sys

# `python trainer/main.py` puts trainer/ first on sys.path, where its sub-packages (data, model, eval...)
# would shadow top-level modules for the whole process: import the installed package instead.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse  # noqa: E402
import logging  # noqa: E402

from trainer.config import ConfigError, RunConfig, load  # noqa: E402
from trainer.exit_codes import ExitCode  # noqa: E402
from trainer.preflight import preflight  # noqa: E402

logger = logging.getLogger("trainer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="a YAML file or a shipped preset name (tiny, pretrain_4m)")
    parser.add_argument("--resume", default=None, help="'auto' (newest complete checkpoint, if any) or a checkpoint path")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by the deepspeed launcher")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.lr=3e-4")
    return parser.parse_args(argv)


def check_locations(cfg: RunConfig) -> None:
    """Refuse before any process group starts what trainer.preflight refuses (the API runs the same checks)."""
    problems = preflight(cfg, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    if problems:
        raise ConfigError("\n".join(problems))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = load(args.config, args.overrides)
        check_locations(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return ExitCode.CONFIG

    return run(cfg, args)


def run(cfg: RunConfig, args: argparse.Namespace) -> int:
    """Join the process group and train. A crash in our code raises (ExitCode.CRASH, with its traceback);
    a collective that fails because a peer vanished ends the process with ExitCode.PEER_LOST."""
    from trainer.data.loader import prepare_streaming_env
    from trainer.distributed import exit_peer_lost, init_distributed, is_peer_lost
    from trainer.loop import Trainer

    dist = init_distributed(args.local_rank, cfg.engine.startup_timeout_s)
    try:
        prepare_streaming_env()
        try:
            trainer = Trainer(cfg, dist, resume=args.resume)
        except (ValueError, FileNotFoundError) as err:  # bad data locations, weights, tokenizer: one line each
            logger.debug("set-up failed", exc_info=True)
            print(f"error (rank {dist.rank}): {err}", file=sys.stderr)
            return ExitCode.CONFIG
        try:
            result = trainer.train()
        finally:
            trainer.close()
    except Exception as err:
        if not is_peer_lost(err):
            raise
        exit_peer_lost(err, dist.peers)
    if result:
        logger.info("final retrieval: %s", " ".join(f"{k}={v:.2f}" for k, v in result.items() if not k.startswith("itc_")))
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
