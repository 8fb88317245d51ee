"""The torch-free config tree shared by the trainer, dataprep and the API."""

from trainer.config.batch import BatchPlan, resolve_batch
from trainer.config.checkpoint import CheckpointConfig, EvalConfig, LogConfig
from trainer.config.data import AugmentConfig, DataConfig
from trainer.config.engine import EngineConfig
from trainer.config.loss import LossConfig
from trainer.config.model import ModelConfig, TextConfig, VisionConfig
from trainer.config.optim import OptimConfig
from trainer.config.run import ConfigError, RunConfig, dump, from_dict, load, parse_overrides, preset_names

__all__ = [
    "AugmentConfig", "BatchPlan", "CheckpointConfig", "ConfigError", "DataConfig", "EngineConfig", "EvalConfig",
    "LogConfig", "LossConfig", "ModelConfig", "OptimConfig", "RunConfig", "TextConfig", "VisionConfig",
    "dump", "from_dict", "load", "parse_overrides", "preset_names", "resolve_batch",
]
