"""Kubernetes manifests of training jobs, rendered from the templates shipped in this package."""

from api.k8s.render import TrainingJobSpec, render_training_job, to_yaml

__all__ = ["TrainingJobSpec", "render_training_job", "to_yaml"]
