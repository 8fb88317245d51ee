"""Launchers: how a run's trainer processes are started, watched and stopped."""

from __future__ import annotations

from api.launchers.base import Launcher, LaunchError, LaunchRequest, ResourceError, Status
from api.launchers.local import LocalLauncher
from api.settings import Settings

__all__ = ["LaunchError", "LaunchRequest", "Launcher", "LocalLauncher", "ResourceError", "Status", "build_launchers"]


def build_launchers(settings: Settings) -> dict[str, Launcher]:
    """The launchers the settings enable, by name."""
    launchers: dict[str, Launcher] = {}
    if "local" in settings.launchers:
        launchers["local"] = LocalLauncher(settings.runs_root, settings.workdir, settings.local_runner,
                                           settings.trainer_script, run_users=settings.run_users)
    if "kubernetes" in settings.launchers:
        from api.launchers.kubernetes import KubernetesLauncher  # the kubernetes client loads only when enabled

        launchers["kubernetes"] = KubernetesLauncher.from_settings(settings)
    return launchers
