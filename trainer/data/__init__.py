"""The data path: MDS shards -> two augmented views + tokens (loader.py), finished on the device
(device_augment.py); plus the retrieval split for evaluation."""

from trainer.data.dataset import PretrainDataset, RetrievalData
from trainer.data.device_augment import DeviceAugment
from trainer.data.loader import build_eval_data, build_train_loader, prepare_streaming_env, tokenize
from trainer.data.tokenizer import load_tokenizer

__all__ = [
    "DeviceAugment", "PretrainDataset", "RetrievalData", "build_eval_data", "build_train_loader", "load_tokenizer",
    "prepare_streaming_env", "tokenize",
]
