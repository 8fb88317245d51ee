"""DeepSpeed engine settings; the DeepSpeed JSON is generated from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from trainer.config.base import Section

GENERATED_DEEPSPEED_KEYS = {
    "train_batch_size": "data.global_batch_size",
    "train_micro_batch_size_per_gpu": "data.batch_size",
    "gradient_accumulation_steps": "data.global_batch_size",
    "elasticity": "data.global_batch_size",
    "bf16": "engine.precision",
    "bfloat16": "engine.precision",
    "fp16": "engine.precision",
    "amp": "engine.precision",
    "torch_autocast": "engine.precision",
    "zero_optimization.stage": "engine.zero_stage",
    "zero_optimization.reduce_bucket_size": "engine.reduce_bucket_size",
    "zero_optimization.allgather_bucket_size": "engine.allgather_bucket_size",
    "zero_optimization.overlap_comm": "engine.overlap_comm",
    "zero_optimization.contiguous_gradients": "engine.contiguous_gradients",
    "gradient_clipping": "optim.grad_clip",
    "optimizer": "optim.* (the trainer passes a torch AdamW built from it)",
    "scheduler": "optim.* (warm-up and cosine, stepped by the trainer's schedule)",
    "zero_allow_untested_optimizer": "optim.* (required for the torch AdamW the trainer passes)",
    "compile": "engine.compile",
    "checkpoint.use_node_local_storage": "checkpoint.storage",
    "checkpoint.load_universal": "checkpoint.load_universal",
}
"""DeepSpeed config keys the trainer generates from the RunConfig (dotted) -> the RunConfig key to set
instead. An engine.deepspeed entry at or under one of them is refused: one setting, one place."""


def refused_deepspeed_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The dotted keys of `tree` that are, or lie under, a generated key -> the RunConfig key to set."""
    refused = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if dotted in GENERATED_DEEPSPEED_KEYS:
            refused[dotted] = GENERATED_DEEPSPEED_KEYS[dotted]
        elif isinstance(value, dict):
            refused |= refused_deepspeed_keys(value, f"{dotted}.")
        else:  # a section given as a value (zero_optimization: 2, DeepSpeed's legacy form) sets what it holds
            owners = [owner for name, owner in GENERATED_DEEPSPEED_KEYS.items() if name.startswith(f"{dotted}.")]
            if owners:
                refused[dotted] = owners[0]
    return refused


class EngineConfig(Section):
    zero_stage: Literal[0, 1, 2] = 2
    precision: Literal["bf16", "fp32"] = "bf16"
    """Compute precision. bf16 keeps fp32 master weights in the optimizer (DeepSpeed bf16 mode)."""
    reduce_bucket_size: int = Field(50_000_000, ge=1)
    """Elements per gradient-reduction bucket. DeepSpeed's default (5e8) holds about 2 GB of bf16
    buffers with overlap_comm; 5e7 keeps the overlap at a tenth of the memory."""
    allgather_bucket_size: int = Field(50_000_000, ge=1)
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    fused_kernels: bool = True
    """Use the fused Triton kernels where a GPU and Triton are present; else the torch reference."""
    compile: bool = False
    """torch.compile each transformer block in place (parameter names and checkpoints unchanged)."""
    collective_timeout_s: float = Field(600, gt=0)
    """Once the first step is done, every collective of every process group (DeepSpeed's included)
    fails after this long: a vanished peer ends the run with ExitCode.PEER_LOST within it. Longer than
    the slowest step, checkpoint or evaluation that one rank can spend while the others wait for it."""
    startup_timeout_s: float = Field(1800, gt=0)
    """The same bound before the first step is done: rendezvous, set-up, a resume's load and the first
    step, while nodes may start minutes apart (image pulls, slow file systems)."""
    stop_grace_s: float = Field(20, gt=0)
    """After SIGTERM (or the API's cancel), how long a rank may take to reach the next step boundary;
    one blocked longer (in a collective) exits ExitCode.STOP_UNCLEAN without a checkpoint. Below the
    launcher's kill delay (30 s for torchrun and the deepspeed launcher)."""
    deepspeed: dict[str, Any] = {}
    """DeepSpeed config entries merged (recursively) over the generated config: offload, the monitor,
    the comms logger... Keys the RunConfig already sets (batch sizes, precision, ZeRO stage and
    buckets, clipping, optimizer, scheduler) are refused, naming the key to set instead."""

    @field_validator("deepspeed")
    @classmethod
    def _check_deepspeed(cls, tree: dict[str, Any]) -> dict[str, Any]:
        refused = [f"{key} is generated from the RunConfig: set {owner} instead"
                   for key, owner in refused_deepspeed_keys(tree).items()]
        if refused:
            raise ValueError("; ".join(refused))
        return tree
