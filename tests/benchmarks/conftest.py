"""`benchmarks` is a folder of scripts beside the installed packages: make it importable from the
repository root (pytest runs with --import-mode=importlib, which leaves sys.path alone)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
