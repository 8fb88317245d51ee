"""What a launcher does for the supervisor: start an attempt, report on it, stop it, read its log."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from api.schemas import Resources
from trainer.config import RunConfig


class ResourceError(ValueError):
    """Resources this launcher cannot provide; the message says what it can."""


class LaunchError(RuntimeError):
    """The launcher could not start the attempt."""


@dataclass(frozen=True)
class LaunchRequest:
    run_id: str
    attempt: int
    config: RunConfig
    config_yaml: str
    resources: Resources
    env: dict[str, str]
    """The control-plane protocol variables (TCL_API_URL, TCL_RUN_ID, TCL_RUN_TOKEN)."""


@dataclass(frozen=True)
class Status:
    running: bool
    exit_code: int | None = None
    """How a finished attempt ended (0 = success); None when that is unknown."""
    detail: str = ""
    """What the launcher knows about the ending, for the run's reason."""


class Launcher(ABC):
    """One way of running trainers. A handle is the launcher's own string naming an attempt."""

    name: ClassVar[str]

    @abstractmethod
    def placement(self, run_id: str) -> dict[str, Any]:
        """Config keys the launcher decides (output_dir, data.cache_dir), as a nested dict."""

    @abstractmethod
    def check(self, run_id: str, config: RunConfig, resources: Resources) -> None:
        """Raise ResourceError when this run cannot be launched as asked (before it is accepted)."""

    @abstractmethod
    def launch(self, request: LaunchRequest) -> str:
        """Start an attempt; return its handle. Raises LaunchError."""

    @abstractmethod
    def recover(self, run_id: str, attempt: int) -> str | None:
        """The handle of an attempt whose launch began but whose handle was never stored, from what the
        launch recorded before it started anything (a file on disk, deterministic job names); None when
        nothing of that attempt was started."""

    @abstractmethod
    def status(self, run_id: str, handle: str) -> Status:
        """Whether the attempt still runs, and how it ended if not."""

    @abstractmethod
    def stop(self, run_id: str, handle: str, *, force: bool) -> None:
        """Ask the attempt to stop (SIGTERM, job deletion with grace) or, with force, kill it."""

    @abstractmethod
    def read_log(self, run_id: str, handle: str | None, offset: int, limit: int = 1 << 20) -> tuple[bytes, int]:
        """Up to `limit` log bytes from `offset` (negative: from the end) and the offset after them."""

    @abstractmethod
    def release(self, run_id: str, handle: str) -> None:
        """Free what a finished attempt still holds."""
