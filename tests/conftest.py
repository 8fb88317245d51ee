"""Session-wide test settings.

Without a GPU the Triton kernels can only run in Triton's interpreter, and Triton reads TRITON_INTERPRET
when a kernel is decorated: it must be set before any test module (or anything a test imports) imports a
kernel module, hence here, at the root. With a GPU the kernels compile and run for real.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
