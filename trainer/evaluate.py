"""Zero-shot retrieval of a checkpoint: `tcl-eval CHECKPOINT (--annotation FILE --image-root DIR | --split MDS)`.

CHECKPOINT is anything `model.init` reads: a step directory (or a checkpoints directory, at its newest
complete step), a tcl export, an official TCL/ALBEF .pth (its architecture from --config, default the
paper's). The evaluation is the trainer's own (trainer.eval.retrieval): ITC top-k, then the ITM re-rank.
Under torchrun the re-rank is sharded across the processes and the result equals one process's. Prints the
TR/IR R@1/5/10 table; writes the figures as JSON next to the checkpoint (or to --output), atomically.
Bad input (missing images, a wrong annotation format, an unknown layout, a checkpoint that does not fit
its config): one line on stderr, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

RECALLS = ("r1", "r5", "r10")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcl-eval", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--annotation", type=Path, help="official retrieval JSON (coco_test.json, flickr30k_test.json)")
    source.add_argument("--split", help="an MDS retrieval split (local folder or s3://...)")
    parser.add_argument("--image-root", type=Path, help="folder the annotation's image paths are relative to")
    parser.add_argument("--config", default="pretrain_4m",
                        help="architecture of a checkpoint without a config of ours (official .pth): YAML or preset")
    parser.add_argument("--image-size", type=int, help="resolution (default: eval.image_size, else the training one)")
    parser.add_argument("--k-test", type=int, help="ITC candidates re-ranked per query (default: eval.k_test)")
    parser.add_argument("--batch-size", type=int, help="encoding batch; re-rank pairs per call")
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="default: the checkpoint's engine.precision")
    parser.add_argument("--num-workers", type=int, default=4, help="image decoding workers")
    parser.add_argument("--output", type=Path, help="JSON output (default: next to the checkpoint)")
    args = parser.parse_args(argv)
    if args.annotation is not None and args.image_root is None:
        parser.error("--annotation needs --image-root")
    return args


def format_table(recall: dict[str, float]) -> str:
    lines = [f"{'':10}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'mean':>8}"]
    for label, key in (("TR (i2t)", "tr"), ("IR (t2i)", "ir")):
        values = [recall[f"{key}_{r}"] for r in RECALLS]
        lines.append(f"{label:10}" + "".join(f"{v:8.2f}" for v in values) + f"{sum(values) / 3:8.2f}")
    lines.append(f"R mean {recall['r_mean']:.2f} (ITC only, no re-rank: {recall['itc_r_mean']:.2f})")
    return "\n".join(lines)


def default_output(checkpoint: str, data_name: str, image_size: int) -> Path:
    path = Path(checkpoint.rstrip("/"))
    stem = path.name if path.is_dir() else path.stem
    return path.with_name(f"{stem}.retrieval-{data_name}-{image_size}px.json")


def write_json_atomically(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def _init_process_group() -> tuple[int, int, Any]:
    """(rank, world size, device) from torchrun's environment; a plain process is a world of one."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return torch.distributed.get_rank(), world, device
    return 0, 1, device


def run(args: argparse.Namespace, rank: int, world: int, device: Any) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from trainer.config import load
    from trainer.data.loader import build_eval_data
    from trainer.data.tokenizer import load_tokenizer
    from trainer.eval.annotations import annotation_split
    from trainer.eval.retrieval import evaluate_split, split_config
    from trainer.model import TCL
    from trainer.weights.load import KNOWN_LAYOUTS, read_checkpoint
    from trainer.weights.state import apply_full_state, check_fits

    checkpoint = read_checkpoint(args.checkpoint)
    cfg = checkpoint.config or load(args.config)
    if args.image_size:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"image_size": args.image_size})})
    precision = args.precision or cfg.engine.precision
    source = f"{checkpoint.source} ({checkpoint.layout})"
    check_fits(checkpoint.state, cfg, source, KNOWN_LAYOUTS)  # on the meta device: fails before any allocation
    model = TCL(cfg.model, cfg.loss)  # at the checkpoint's resolution; evaluate_split resizes it
    apply_full_state(checkpoint.state, source, KNOWN_LAYOUTS, model)
    # bf16 as in training: DeepSpeed's bf16 weights are the fp32 master weights rounded, run under autocast
    model.to(device=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    split_cfg = split_config(cfg, split=args.split, batch_size=args.batch_size, num_workers=args.num_workers)
    image_size, batch_size = split_cfg.model.vision.img_size, split_cfg.eval.batch_size
    k_test = args.k_test or cfg.eval.k_test

    if args.annotation is not None:
        data_name = args.annotation.stem
        data = annotation_split(
            args.annotation, args.image_root, img_size=image_size, max_words=cfg.data.max_words,
            batch_size=batch_size, num_workers=args.num_workers,
        )
    else:
        from trainer.data.loader import prepare_streaming_env

        prepare_streaming_env()
        data_name = args.split.rstrip("/").rsplit("/", 1)[-1]
        data = build_eval_data(split_cfg)
    output = args.output or default_output(args.checkpoint, data_name, image_size)

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if rank == 0:
            bar = bars.setdefault(stage, tqdm(total=total, desc=stage, unit="item", leave=False, disable=None))
            bar.update(done)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    tokenizer = load_tokenizer(cfg.model.text.tokenizer)
    recall = evaluate_split(
        model, data, tokenizer, image_size=image_size, max_tokens=cfg.data.eval_max_tokens, k_test=k_test,
        batch_size=batch_size, device=device, autocast=autocast, progress=progress,
    )
    for bar in bars.values():
        bar.close()
    record = {
        "checkpoint": str(args.checkpoint), "layout": checkpoint.layout,
        "data": str(args.annotation or args.split), "images": len(data.img2txt), "texts": len(data.texts),
        "image_size": image_size, "k_test": k_test, "precision": precision, "world_size": world, "recall": recall,
    }
    if rank == 0:
        write_json_atomically(output, record)
        print(format_table(recall))
        print(f"wrote {output}")
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from trainer.config import ConfigError
    from trainer.model.pretrained import WeightLoadError

    rank, world, device = _init_process_group()
    try:
        run(args, rank, world, device)
    except (WeightLoadError, ConfigError, ValueError, OSError) as err:  # bad input: one line each
        logging.getLogger("trainer").debug("evaluation failed", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed

        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
