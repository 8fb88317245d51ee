"""The training loop: wires data, model, engine, checkpoints, evaluation and metrics together."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import torch
from tqdm import tqdm

from trainer import kernels
from trainer.checkpoint import Checkpointer, ResumePlan
from trainer.config import RunConfig, dump, resolve_batch
from trainer.control_plane import ControlPlane
from trainer.data.device_augment import DeviceAugment
from trainer.data.loader import build_eval_data, build_train_loader
from trainer.data.sample_log import SampleLog
from trainer.data.tokenizer import load_tokenizer
from trainer.distributed import DistInfo, any_rank, barrier, set_collective_timeout
from trainer.engine import build_engine, distill_alpha
from trainer.eval.retrieval import evaluate_split, split_config
from trainer.exit_codes import ExitCode
from trainer.flops import flops_per_sample, mfu
from trainer.metrics import MetricsLog, PrometheusExporter, format_eval_line, format_train_line
from trainer.model import build_model, count_parameters
from trainer.plots import plot_run
from trainer.step import SpecialTokens, TrainStep
from trainer.stopping import StopRequest
from trainer.tracking import Tracking

logger = logging.getLogger(__name__)


class Trainer:
    """Owns one run. `train()` runs to cfg's end (or to a stop request), checkpointing and evaluating on
    its cadence; `--resume` restores every piece of state from the newest complete checkpoint."""

    def __init__(self, cfg: RunConfig, dist: DistInfo, *, resume: str | None = None) -> None:
        self.cfg, self.dist = cfg, dist
        self.control_plane = ControlPlane.from_env() if dist.is_main else None
        self.checkpointer = Checkpointer(cfg, dist, registry=self.control_plane)
        self.out = self.checkpointer.run_dir  # output_dir, or the node-local staging folder of s3:// output
        self.resume_plan = self.checkpointer.plan_resume(resume) if resume else None
        if self.resume_plan is not None:  # decided before the engine: an elastic resume changes its config
            self.cfg = cfg = self.resume_plan.adapt(cfg)
        self.device = dist.device
        kernels.set_fused(cfg.engine.fused_kernels)
        torch.manual_seed(cfg.seed)  # identical init on every rank (DeepSpeed also broadcasts parameters)

        self.tokenizer = load_tokenizer(cfg.model.text.tokenizer)
        if len(self.tokenizer) > cfg.model.text.vocab_size:
            raise ValueError(
                f"tokenizer {cfg.model.text.tokenizer!r} has {len(self.tokenizer)} tokens but"
                f" model.text.vocab_size is {cfg.model.text.vocab_size}"
            )
        self.plan = resolve_batch(cfg, dist.world_size)
        logger.info(
            "global batch %d = %d per micro-batch x %d ranks x %d accumulation steps",
            self.plan.global_batch, self.plan.micro, self.plan.world, self.plan.accum,
        )
        self.loader = build_train_loader(cfg, rank=dist.rank, world_size=dist.world_size, tokenizer=self.tokenizer)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"data.train {cfg.data.train!r} gives no full batch of {self.plan.loader_batch} per rank")
        self.total_steps = cfg.optim.max_steps or cfg.optim.epochs * self.steps_per_epoch

        self.flops_per_sample = flops_per_sample(cfg).total
        model, teacher, queues = build_model(cfg)
        logger.info("model: %.1fM trainable parameters", count_parameters(model) / 1e6)
        self.engine = build_engine(model, cfg, plan=self.plan, total_steps=self.total_steps, device=self.device)
        self.teacher = teacher.to(self.device)
        self.queues = queues.to(self.device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.engine.precision == "bf16")
        self.train_step = TrainStep(
            cfg, self.engine, self.teacher, self.queues, DeviceAugment(cfg.data.augment).to(self.device),
            SpecialTokens.of(self.tokenizer), self.device, dist.rank, plan=self.plan,
        )
        self.eval_data = build_eval_data(split_config(cfg)) if cfg.data.eval else None
        tracking = Tracking.open(cfg, self.out) if dist.is_main else None
        self.metrics = MetricsLog(self.out / "metrics.jsonl", enabled=dist.is_main, tracking=tracking)
        self.exporter = PrometheusExporter(cfg.log.metrics_port, dist.local_rank, dist.rank)
        if self.control_plane is not None and tracking is not None:
            self.control_plane.report_tracking(tracking.locations)
        self.step = 0
        self.epoch = 0
        self.last_eval: dict[str, float] = {}
        self._starting = True
        self.stop = StopRequest(cfg.engine.stop_grace_s)
        self.stop.install()
        self.sample_log = SampleLog(self.out, dist.rank) if cfg.log.sample_ids else None
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(dump(cfg))
        if self.resume_plan is not None:
            self._resume(self.resume_plan)

    # --- state -----------------------------------------------------------------------------------
    def client_state(self) -> dict[str, Any]:
        """Everything a resumed run needs beyond DeepSpeed's own state."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loader": self.loader.state_dict(),
            "teacher": self.teacher.state_dict(),
            "queues": self.queues.state_dict(),
            "config": self.cfg.model_dump(mode="json"),
        }

    def _resume(self, plan: ResumePlan) -> None:
        state = self.checkpointer.load(self.engine, plan)
        self.step, self.epoch = state["step"], state["epoch"]
        self.teacher.load_state_dict(state["teacher"])
        self.queues.load_state_dict(state["queues"])
        self.loader.load_state_dict(state["loader"])
        logger.info("resumed at step %d (epoch %d)", self.step, self.epoch)

    # --- loop ------------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """Train to the configured end; returns the last retrieval result (empty without an eval split).
        Raises SystemExit(ExitCode.STOPPED) after checkpointing when a stop was requested (SIGTERM or
        the API's cancel); every rank agrees on the stop step with one tiny all-reduce per step."""
        self.engine.train()
        show = self.dist.is_main and self.cfg.log.progress_bar and sys.stderr.isatty()
        with tqdm(total=self.total_steps, initial=self.step, disable=not show, unit="step") as bar:
            while self.step < self.total_steps:
                self._run_epoch(bar)
        return self.last_eval

    def _run_epoch(self, bar: tqdm) -> None:
        """Steps over the rest of the current epoch (all of it unless resumed mid-epoch)."""
        cfg = self.cfg
        window_start = ready = time.perf_counter()
        data_wait, window_steps = 0.0, 0
        for batch in self.loader:
            data_wait += time.perf_counter() - ready
            alpha = distill_alpha(self.step, self.steps_per_epoch, cfg.loss)
            out = self.train_step(batch, self.step, alpha)
            self.step += 1
            if self.sample_log is not None:
                self.sample_log.write(self.step, self.epoch, batch["index"].tolist())
            window_steps += 1
            bar.update(1)
            final = self.step == self.total_steps
            if self.step % cfg.log.every_steps == 0 or final:
                self._log(out, alpha, window_steps, time.perf_counter() - window_start, data_wait)
                window_start, data_wait, window_steps = time.perf_counter(), 0.0, 0
            if self._starting:  # this process's first step is done (first batches fetched): start-up is over
                set_collective_timeout(cfg.engine.collective_timeout_s)
                self._starting = False
            if any_rank(self.stop.requested, self.device):
                self.stop.acting()
                self._checkpoint()
                raise SystemExit(ExitCode.STOPPED)
            checkpoint = self.step % cfg.checkpoint.every_steps == 0 or final
            evaluate = self.eval_data is not None and (self.step % cfg.eval.every_steps == 0 or final)
            if checkpoint:
                self._checkpoint()
            if evaluate:
                self._evaluate()
            if checkpoint or evaluate:  # keep their time out of the throughput window
                window_start, data_wait, window_steps = time.perf_counter(), 0.0, 0
            if final:
                return
            ready = time.perf_counter()
        self.epoch += 1

    def _log(self, out: dict[str, torch.Tensor], alpha: float, steps: int, elapsed: float, data_wait: float) -> None:
        losses = {k: float(v) for k, v in out.items()}
        record = {
            "kind": "train", "step": self.step, "total_steps": self.total_steps, "epoch": self.epoch,
            "losses": losses, "lr": self.engine.get_lr()[0], "temp": float(self.engine.module.clamped_temp().detach()),
            "alpha": alpha, "samples_per_sec": steps * self.plan.global_batch / elapsed,
            "data_wait_frac": data_wait / elapsed, "step_time": elapsed / steps, "time": time.time(),
        }
        gpu_memory = None
        if self.device.type == "cuda":
            gpu_memory = record["gpu_memory"] = torch.cuda.max_memory_allocated(self.device)
            per_device = record["samples_per_sec"] / self.dist.world_size
            record["mfu"] = mfu(per_device, self.flops_per_sample, self.cfg.log.peak_flops)
        self.exporter.update(record, gpu_memory)
        if self.dist.is_main:
            logger.info(format_train_line(record))
            self.metrics.write(record)
        if self.control_plane is not None:
            cancel = self.control_plane.heartbeat(
                step=self.step, total_steps=self.total_steps, epoch=self.epoch,
                samples_per_sec=record["samples_per_sec"],
                metrics={**losses, **{f"eval/{k}": v for k, v in self.last_eval.items()}},
            )
            if cancel:
                self.stop.request("the API asked to cancel the run")

    def _checkpoint(self) -> None:
        saved = self.checkpointer.save(self.engine, self.step, self.client_state())
        if self.control_plane is not None:
            metrics = {f"eval/{k}": v for k, v in self.last_eval.items()}
            self.control_plane.register_checkpoint(saved.path, self.step, metrics, uri=saved.uri)

    def _evaluate(self) -> None:
        """Zero-shot retrieval, the code `tcl-eval` runs, at eval.image_size (the split was read at it)."""
        cfg = self.cfg
        self.last_eval = evaluate_split(
            self.engine.module, self.eval_data, self.tokenizer,
            image_size=cfg.eval.image_size or cfg.model.vision.img_size, max_tokens=cfg.data.eval_max_tokens,
            k_test=cfg.eval.k_test, batch_size=cfg.eval.batch_size, device=self.device, autocast=self.autocast,
        )
        if self.dist.is_main:
            logger.info(format_eval_line(self.step, self.last_eval))
            self.metrics.write({"kind": "eval", "step": self.step, "recall": self.last_eval, "time": time.time()})
            plot_run(self.metrics.path, self.out / "metrics.png", title=self.cfg.name)
        barrier()

    def close(self) -> None:
        if self.sample_log is not None:
            self.sample_log.close()
        if self.dist.is_main and self.metrics.path.is_file():
            plot_run(self.metrics.path, self.out / "metrics.png", title=self.cfg.name)
        self.checkpointer.sync_outputs()
        self.metrics.close(self.out / "metrics.png", self.out / "config.yaml")
