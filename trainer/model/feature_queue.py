"""The image and text feature queues, identical on every rank, filled with gathered momentum features."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def gather_from_ranks(x: Tensor) -> Tensor:
    """Concatenate x (B x D) from every rank in rank order (no gradient); x itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    out = x.new_empty((dist.get_world_size() * x.shape[0], *x.shape[1:]))
    dist.all_gather_into_tensor(out, x.contiguous())
    return out


class FeatureQueue(nn.Module):
    """Two Q x D queues (one row per entry) and a write pointer, as buffers so they reach checkpoints.

    Initialised randn then L2-normalised from a seed shared by all ranks (DeepSpeed broadcasts
    parameters, not buffers). Any number of entries per step works: writes wrap around the end."""

    def __init__(self, size: int, dim: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("image_queue", F.normalize(torch.randn(size, dim, generator=g), dim=1))
        self.register_buffer("text_queue", F.normalize(torch.randn(size, dim, generator=g), dim=1))
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.image_queue.shape[0]

    @torch.no_grad()
    def enqueue(self, image_feat: Tensor, text_feat: Tensor) -> None:
        """Gather this step's momentum features of all ranks and write them at the pointer, as if
        written one by one (more entries than the queue holds: only the last Q remain)."""
        images, texts = gather_from_ranks(image_feat.float()), gather_from_ranks(text_feat.float())
        n, keep = images.shape[0], min(images.shape[0], self.size)
        slots = (self.ptr + (n - keep) + torch.arange(keep, device=self.ptr.device)) % self.size
        self.image_queue.index_copy_(0, slots, images[n - keep :])
        self.text_queue.index_copy_(0, slots, texts[n - keep :])
        self.ptr.copy_((self.ptr + n) % self.size)
