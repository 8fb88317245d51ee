"""DeepSpeed engine settings; the DeepSpeed JSON is generated from these."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainer.config.base import Section


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
