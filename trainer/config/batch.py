"""The batch plan: how the global batch of a run is composed on a given number of ranks.

Torch-free, so the API can check a run before launching it. The trainer, the loader and the DeepSpeed
config all take their batch sizes from one `resolve_batch(cfg, world_size)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config.run import ConfigError, RunConfig


@dataclass(frozen=True)
class BatchPlan:
    """global_batch = micro x world x accum samples per optimizer step."""

    micro: int
    """Rows of one forward/backward on one rank (data.batch_size)."""
    world: int
    """Data-parallel ranks."""
    accum: int
    """Micro-batches accumulated per rank per optimizer step."""
    global_batch: int

    @property
    def loader_batch(self) -> int:
        """Rows a rank's loader yields per optimizer step: all of its micro-batches at once."""
        return self.micro * self.accum

    def micro_index(self, rank: int, micro: int) -> int:
        """The global index of a rank's micro-batch within its optimizer step, micro-major
        (micro * world + rank): rank r's micro-batch j holds the rows that rank j * world + r holds on
        world x accum ranks without accumulation (the loader and the step split batches to match)."""
        return micro * self.world + rank


def resolve_batch(cfg: RunConfig, world_size: int) -> BatchPlan:
    """The plan of cfg on world_size ranks: data.global_batch_size None means micro x world (no
    accumulation); else accumulation = global / (micro x world), which must be a whole number >= 1."""
    if world_size < 1:
        raise ConfigError(f"world size must be at least 1, not {world_size}")
    micro, wanted = cfg.data.batch_size, cfg.data.global_batch_size
    per_pass = micro * world_size
    if wanted is None:
        return BatchPlan(micro=micro, world=world_size, accum=1, global_batch=per_pass)
    accum, rest = divmod(wanted, per_pass)
    if accum < 1 or rest:
        raise ConfigError(_refusal(wanted, micro, world_size))
    return BatchPlan(micro=micro, world=world_size, accum=accum, global_batch=wanted)


def _refusal(wanted: int, micro: int, world_size: int) -> str:
    """Why `wanted` cannot be composed on world_size ranks, and the three ways out."""
    per_pass = micro * world_size
    multiples = [m for m in (wanted // per_pass * per_pass, (wanted // per_pass + 1) * per_pass) if m]
    fixes = [f"data.global_batch_size to a multiple of {per_pass} ({' or '.join(map(str, multiples))})"]
    if wanted % world_size == 0:
        fixes.append(f"data.batch_size to a divisor of {wanted // world_size} (= {wanted} / {world_size} ranks)")
    worlds = [w for w in range(1, wanted // micro + 1) if wanted % (micro * w) == 0]
    ways = [f"set {', or '.join(fixes)}"] + ([f"run on {', '.join(map(str, worlds))} ranks"] if worlds else [])
    return (
        f"data.global_batch_size {wanted} is not data.batch_size {micro} x {world_size} ranks x a whole number"
        f" of accumulation steps ({wanted} / {per_pass} = {wanted / per_pass:.3g}): {'; or '.join(ways)}"
    )
