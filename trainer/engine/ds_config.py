"""The DeepSpeed config, generated from the RunConfig: there is no second hand-edited JSON."""

from __future__ import annotations

from typing import Any

from trainer.config import BatchPlan, RunConfig
from trainer.config.run import merge


def build_ds_config(cfg: RunConfig, plan: BatchPlan) -> dict[str, Any]:
    """Batch sizes and accumulation (from the plan), clipping, ZeRO stage and buckets, precision, then the
    user's engine.deepspeed merged over them (validated in the config: it cannot restate these keys).
    The optimizer and the LR schedule are passed to deepspeed.initialize as objects (torch AdamW, fused
    on GPU), so none appear here."""
    e = cfg.engine
    generated = {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro,
        "gradient_accumulation_steps": plan.accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {
            "stage": e.zero_stage,
            "reduce_bucket_size": e.reduce_bucket_size,
            "allgather_bucket_size": e.allgather_bucket_size,
            "overlap_comm": e.overlap_comm,
            "contiguous_gradients": e.contiguous_gradients,
        },
        "bf16": {"enabled": e.precision == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        "checkpoint": {  # node-local disks: each node's first rank writes the model states; elastic resume
            "use_node_local_storage": cfg.checkpoint.storage == "node_local",
            "load_universal": cfg.checkpoint.load_universal,
        },
    }
    return merge(generated, e.deepspeed)
