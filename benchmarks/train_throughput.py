"""Training throughput of TCL on one device: samples/s, MFU, a step-time breakdown and peak memory.

    python -m benchmarks.train_throughput --config pretrain_4m --steps 30 --warmup 10 [--loader] [key=value ...]
    python -m benchmarks.train_throughput --config tiny --steps 3              # CPU smoke run

Each variant (`--variants`, default: eager and fused) builds the project's model, engine and TrainStep
afresh from the config plus its overrides, runs `--warmup` steps, then times `--steps` steps. Inputs are
synthetic batches already on the device (random uint8 crops, augmentation parameters drawn from the
real distribution, random captions) or, with `--loader`, the real loader on the MDS shards of
data.train. `--loader-only` times the loader alone (no model): the data path must outrun training.
The breakdown records device events around the step's parts (no synchronisation inside a step).
MFU is reported against the model FLOP count of trainer.flops.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import Tensor

from trainer.flops import H100_SXM_BF16_FLOPS, flops_per_sample, mfu
from trainer import kernels
from trainer.config import RunConfig, load, resolve_batch
from trainer.data.augment_params import draw_view_params
from trainer.data.device_augment import DeviceAugment
from trainer.distributed import DistInfo, init_distributed
from trainer.engine import build_engine
from trainer.model import build_model
from trainer.step import SpecialTokens, TrainStep

VARIANTS: dict[str, list[str]] = {
    "eager": ["engine.fused_kernels=false"],
    "fused": ["engine.fused_kernels=true"],
}
"""Variant name -> config overrides. 'eager' is our plain implementation without the fused kernels
(the in-process baseline); 'fused' takes the Triton kernels (on a GPU)."""
BENCHMARK_OVERRIDES = [
    "model.vision.init=null", "model.text.init=null", "log.metrics_port=null", "data.global_batch_size=null",
]
"""Random weights (the speed does not depend on them; the GPU machine has no internet), no exporter, and
no gradient accumulation (a timed step is one micro-batch per rank)."""
BERT_SPECIAL = SpecialTokens(pad=0, cls=101, mask=103)
"""bert-base-uncased's ids, for synthetic captions (no tokenizer needed)."""
PHASES = ("augment", "ema", "momentum", "forward", "backward", "optimizer", "queue")


class VariantResult(BaseModel):
    variant: str
    device: str
    batch_size: int
    steps: int
    samples_per_sec: float
    mfu: float
    step_ms: float
    breakdown_ms: dict[str, float]
    """Per step: data wait, each timed phase, and 'other' (the rest of the step: masking, host work)."""
    peak_memory_gib: float | None
    memory_at_start_gib: float | None
    """Still allocated when the variant began (what an earlier variant left behind inflates its peak)."""
    final_loss: float


class PhaseTimer:
    """Accumulates the time of named phases: device events on a GPU (read once at the end), wall clock on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.events: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
        self.seconds: dict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.events.clear()
        self.seconds.clear()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events[name].append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.seconds[name] += time.perf_counter() - t0

    def totals_ms(self) -> dict[str, float]:
        """Milliseconds per phase, summed over the steps since the last reset (synchronises)."""
        if self.cuda:
            torch.cuda.synchronize()
            return {name: sum(s.elapsed_time(e) for s, e in pairs) for name, pairs in self.events.items()}
        return {name: 1e3 * s for name, s in self.seconds.items()}


class Timed:
    """Stands in for one of TrainStep's components, timing the named methods ('__call__' for calls)."""

    def __init__(self, target: Any, timer: PhaseTimer, phases: dict[str, str]) -> None:
        self._target, self._timer, self._phases = target, timer, phases

    def _timed(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._timer.phase(phase):
                return fn(*args, **kwargs)
        return run

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        return self._timed(self._phases[name], attr) if name in self._phases else attr

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self._phases["__call__"], self._target)(*args, **kwargs)


def synthetic_batches(cfg: RunConfig, count: int, device: torch.device, seed: int = 0) -> list[dict[str, Tensor]]:
    """Loader-shaped batches on the device: two uint8 crops per sample, augmentation parameters drawn from
    the configured distribution, captions of random length (CLS ... SEP, then padding)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    b, size, length = cfg.data.batch_size, cfg.model.vision.img_size, cfg.data.max_tokens
    batches = []
    for _ in range(count):
        lengths = torch.randint(length // 2, length + 1, (b,), generator=gen)
        width = length if cfg.data.fixed_length else int(lengths.max())
        ids = torch.randint(1000, cfg.model.text.vocab_size, (b, width), generator=gen)
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        ids[:, 0] = BERT_SPECIAL.cls
        ids[torch.arange(b), lengths - 1] = 102  # [SEP]
        ids = ids.masked_fill(mask == 0, BERT_SPECIAL.pad)
        params = np.stack([np.stack([draw_view_params(rng, cfg.data.augment) for _ in range(b)]) for _ in range(2)])
        batch = {
            "image_u8": torch.randint(0, 256, (2, b, 3, size, size), generator=gen, dtype=torch.uint8),
            "aug_params": torch.from_numpy(params),
            "input_ids": ids,
            "attention_mask": mask,
            "index": torch.arange(b),
        }
        batches.append({k: v.to(device) for k, v in batch.items()})
    return batches


def cycle(make_iter: Callable[[], Iterator[dict[str, Tensor]]]) -> Iterator[dict[str, Tensor]]:
    """Batches forever: a new pass (epoch) whenever one ends."""
    while True:
        yield from make_iter()


def run_variant(
    name: str, cfg: RunConfig, dist: DistInfo, batches: Iterator[dict[str, Tensor]], tokens: SpecialTokens,
    *, warmup: int, steps: int, peak_flops: float,
) -> VariantResult:
    """Build the model, engine and TrainStep of `cfg`, run warm-up steps, then time `steps` steps."""
    device = dist.device
    at_start = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None
    kernels.set_fused(cfg.engine.fused_kernels)
    torch.manual_seed(cfg.seed)
    model, teacher, queues = build_model(cfg)
    plan = resolve_batch(cfg, dist.world_size)
    engine = build_engine(model, cfg, plan=plan, total_steps=warmup + steps, device=device)
    timer = PhaseTimer(device)
    train_step = TrainStep(
        cfg,
        Timed(engine, timer, {"__call__": "forward", "backward": "backward", "step": "optimizer"}),
        Timed(teacher.to(device), timer, {"update": "ema", "__call__": "momentum"}),
        Timed(queues.to(device), timer, {"enqueue": "queue"}),
        Timed(DeviceAugment(cfg.data.augment).to(device), timer, {"__call__": "augment"}),
        tokens, device, dist.rank, plan=plan,
    )
    engine.train()
    alpha = cfg.loss.alpha  # the steady state after the ramp: the distillation paths run
    for step in range(warmup):
        train_step(next(batches), step, alpha)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    timer.reset()
    data_wait = 0.0
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        ready = time.perf_counter()
        batch = next(batches)
        data_wait += time.perf_counter() - ready
        out = train_step(batch, step, alpha)
    final_loss = float(out["loss"])  # synchronises
    elapsed = time.perf_counter() - start
    phases = timer.totals_ms()
    step_ms = 1e3 * elapsed / steps
    breakdown = {"data_wait": 1e3 * data_wait / steps, **{p: phases.get(p, 0.0) / steps for p in PHASES}}
    breakdown["other"] = step_ms - sum(breakdown.values())
    samples_per_sec = steps * cfg.data.batch_size / elapsed
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del train_step, engine, model, teacher, queues, out
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return VariantResult(
        variant=name, device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        batch_size=cfg.data.batch_size, steps=steps, samples_per_sec=samples_per_sec,
        mfu=mfu(samples_per_sec, flops_per_sample(cfg).total, peak_flops), step_ms=step_ms,
        breakdown_ms=breakdown, peak_memory_gib=peak, memory_at_start_gib=at_start, final_loss=final_loss,
    )


def loader_rate(loader_batches: Iterator[dict[str, Tensor]], batch_size: int, *, warmup: int, steps: int) -> float:
    """Samples/s of the loader alone (workers decode, crop, flip and tokenize; no model)."""
    for _ in range(warmup):
        next(loader_batches)
    start = time.perf_counter()
    for _ in range(steps):
        next(loader_batches)
    return steps * batch_size / (time.perf_counter() - start)


def format_table(results: list[VariantResult], flops: float) -> str:
    head = ["variant", "samples/s", "MFU", "step ms", "data", *PHASES, "other", "peak GiB", "loss"]
    rows = [head]
    for r in results:
        b = r.breakdown_ms
        rows.append([
            r.variant, f"{r.samples_per_sec:,.1f}", f"{100 * r.mfu:.1f}%", f"{r.step_ms:.1f}",
            *(f"{b[k]:.1f}" for k in ("data_wait", *PHASES, "other")),
            "-" if r.peak_memory_gib is None else f"{r.peak_memory_gib:.2f}", f"{r.final_loss:.3f}",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    device = results[0].device if results else "?"
    return f"{device}, batch {results[0].batch_size if results else '?'}, model FLOPs {flops / 1e9:.1f} GFLOP/pair\n" + "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pretrain_4m", help="a YAML file or a preset name")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--variants", default="eager,fused", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--loader", action="store_true", help="feed the real loader on data.train instead of synthetic batches")
    parser.add_argument("--loader-only", action="store_true", help="time the loader alone (no model) and stop")
    parser.add_argument("--peak-tflops", type=float, default=H100_SXM_BF16_FLOPS / 1e12, help="device peak for MFU")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every variant")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def real_loader(cfg: RunConfig, dist: DistInfo) -> tuple[Iterator[dict[str, Tensor]], SpecialTokens]:
    """The project's loader on data.train, cycling over epochs, and the tokenizer's special ids. One
    for all variants: streaming allows one dataset per cache folder in a process."""
    from trainer.data.loader import build_train_loader, prepare_streaming_env
    from trainer.data.tokenizer import load_tokenizer

    prepare_streaming_env()
    tokenizer = load_tokenizer(cfg.model.text.tokenizer)
    loader = build_train_loader(cfg, rank=dist.rank, world_size=dist.world_size, tokenizer=tokenizer)
    return cycle(lambda: iter(loader)), SpecialTokens.of(tokenizer)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = [*BENCHMARK_OVERRIDES, *args.overrides]
    cfg = load(args.config, base)
    flops = flops_per_sample(cfg).total
    if "RANK" not in os.environ:  # one process: its own rendezvous port, not the shared default
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    dist = init_distributed()
    if args.loader or args.loader_only:
        shared, tokens = real_loader(cfg, dist)
        if args.loader_only:
            rate = loader_rate(shared, cfg.data.batch_size, warmup=args.warmup, steps=args.steps)
            print(f"loader only: {rate:,.1f} samples/s ({cfg.data.num_workers} workers, batch {cfg.data.batch_size})")
            if args.json:
                args.json.write_text(json.dumps({"loader_samples_per_sec": rate, "num_workers": cfg.data.num_workers}))
            return 0

        def batches() -> Iterator[dict[str, Tensor]]:
            return shared
    else:
        synthetic, tokens = synthetic_batches(cfg, 4, dist.device, seed=cfg.seed), BERT_SPECIAL

        def batches() -> Iterator[dict[str, Tensor]]:
            return cycle(lambda: iter(synthetic))  # every variant sees the same batches

    results = []
    for name in args.variants.split(","):
        variant_cfg = load(args.config, [*base, *VARIANTS[name]])
        results.append(run_variant(
            name, variant_cfg, dist, batches(), tokens, warmup=args.warmup, steps=args.steps, peak_flops=args.peak_tflops * 1e12,
        ))
        print(f"{name}: {results[-1].samples_per_sec:,.1f} samples/s", file=sys.stderr, flush=True)
    print(format_table(results, flops))
    if args.json:
        args.json.write_text(json.dumps([r.model_dump() for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
