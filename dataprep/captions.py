"""Caption cleaning exactly as the official TCL/ALBEF pre_caption (the trainer reuses it)."""

from __future__ import annotations

import re

_DELETE = re.compile(r"[,.'!?\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")


def pre_caption(caption: str, max_words: int = 30) -> str:
    """Lowercase; delete , . ' ! ? " ( ) * # : ; ~; '-' and '/' become spaces; '<person>' -> 'person';
    collapse whitespace; keep at most max_words words. May return '' (callers treat that as empty)."""
    text = _DELETE.sub("", caption.lower()).replace("-", " ").replace("/", " ").replace("<person>", "person")
    text = _SPACES.sub(" ", text).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])
