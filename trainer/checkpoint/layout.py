"""Names on disk: one folder per checkpoint tag, and the pointer to the newest complete one."""

from __future__ import annotations

POINTER = "latest"


def tag_for(step: int) -> str:
    return f"step_{step:08d}"
