"""Per-sample randomness: every draw for a sample comes from a generator keyed by what the sample is.

A worker's RNG stream depends on how samples were spread over workers and where a run resumed;
a generator seeded by a hash of (seed, epoch, sample id, stream) does not, so a resumed run sees
exactly the views and captions the uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_rng(seed: int, epoch: int, sample_id: str, stream: str) -> np.random.Generator:
    """A generator for one purpose ('view0', 'view1', 'caption', ...) of one sample in one epoch."""
    key = f"{seed}\x1f{epoch}\x1f{sample_id}\x1f{stream}".encode()
    digest = hashlib.blake2b(key, digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))
