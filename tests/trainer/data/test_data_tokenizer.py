"""The tokenizer loads offline from every kind of source, and says what it looked for when it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.data.tokenizer import bundled_vocab, load_tokenizer

# bert-base-uncased ids, from its published vocab: [CLS] hello world [SEP]; "tokenization" = token ##ization
HELLO_WORLD = [101, 7592, 2088, 102]


def test_bert_base_uncased_falls_back_to_the_bundled_vocab(tmp_path: Path) -> None:
    assert bundled_vocab() is not None
    tokenizer = load_tokenizer("bert-base-uncased", cache_dir=str(tmp_path / "empty-hf-cache"))
    assert tokenizer("Hello WORLD")["input_ids"] == HELLO_WORLD  # lower-cased
    assert tokenizer.convert_ids_to_tokens(tokenizer("tokenization")["input_ids"]) == ["[CLS]", "token", "##ization", "[SEP]"]
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id) == (
        0, 101, 102, 103)
    assert len(tokenizer) == 30522


def tiny_vocab(path: Path) -> Path:
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncat\nsat\n##s\non\n")
    return path


def test_vocab_file_and_directory_with_only_a_vocab(tmp_path: Path) -> None:
    vocab = tiny_vocab(tmp_path / "vocab.txt")
    for source in (vocab, tmp_path):
        tokenizer = load_tokenizer(str(source))
        assert tokenizer("Cats sat on dog")["input_ids"] == [2, 5, 7, 6, 8, 1, 3]


def test_saved_directory_and_hub_cache_layout_load_offline(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    load_tokenizer(str(tiny_vocab(tmp_path / "vocab.txt"))).save_pretrained(saved)
    assert load_tokenizer(str(saved))("cat sat")["input_ids"] == [2, 5, 6, 3]
    # the Hugging Face cache layout: models--org--name/snapshots/<rev>/..., refs/main -> <rev>
    repo = tmp_path / "hf-cache" / "models--acme--tiny-bert"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for file in saved.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    tokenizer = load_tokenizer("acme/tiny-bert", cache_dir=str(tmp_path / "hf-cache"))
    assert tokenizer("on cats")["input_ids"] == [2, 8, 5, 7, 3]


def test_unknown_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tokenizer 'acme/absent'.*not in the local Hugging Face cache"):
        load_tokenizer("acme/absent", cache_dir=str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds none of"):
        load_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "bad.txt").write_text("hello\nworld\n")
    with pytest.raises(ValueError, match=r"lacks the special token\(s\) \['\[UNK\]'"):
        load_tokenizer(str(tmp_path / "bad.txt"))
