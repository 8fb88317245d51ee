"""How a trainer process ends: one code per cause, so that a supervisor knows whether a relaunch can help.

Torch-free: the CLI's config errors and the API read these without importing torch. The deepspeed
launcher exits with the code of the first rank that failed; torchrun exits 1 for any failed worker and
prints each worker's code in its failure summary (`exitcode: 75`).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """How a trainer process ends, one place for all of them."""

    OK = 0
    CRASH = 1
    """An exception in our code (Python's own code for an uncaught exception)."""
    CONFIG = 2
    """A bad config, data location, tokenizer or weights: relaunching cannot help."""
    PEER_LOST = 75
    """A collective failed because another rank vanished (timeout, connection reset or closed by the
    peer): relaunching may help (75 is sysexits' EX_TEMPFAIL)."""
    STOP_UNCLEAN = 76
    """A stop was requested but this rank could not reach a checkpoint within the grace period
    (blocked in a collective): it exits without one."""
    STOPPED = 143
    """A requested stop (SIGTERM, or the API's cancel): checkpointed, then stopped (128 + SIGTERM)."""
