"""The streaming JSON reader gives what json.loads gives, element by element, whatever the chunking."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest

from dataprep import jsonstream
from dataprep.jsonstream import BadRecord, JsonStreamError, iter_array, iter_object_lists


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """Scalars, lists and objects whose strings hold the bytes the scanner must not take for structure."""
    draw = rng.random()
    if depth > 3 or draw < 0.3:
        return rng.choice([1, -2.5e3, None, True, "s", 'q"u\\o}t{e],:', "é[", "", "\\"])
    if draw < 0.65:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "b}", 'c"', "d[", "é"]): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_round_trips_of_random_documents(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonstream, "_CHUNK", chunk)
    rng = random.Random(chunk)
    for _ in range(200):
        values = [random_value(rng) for _ in range(rng.randint(0, 6))]
        text = json.dumps(values, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        assert list(iter_array(io.BytesIO(text.encode()), 1 << 20)) == values, text
        document = {"info": random_value(rng), "images": values, "licenses": [1], "annotations": values[::-1]}
        found = list(iter_object_lists(io.BytesIO(json.dumps(document).encode()), frozenset({"images", "annotations"}),
                                       1 << 20))
        assert found == [("images", v) for v in values] + [("annotations", v) for v in values[::-1]]


def test_bad_elements_are_records_and_a_bad_file_is_an_error() -> None:
    text = b'[{"a": "' + b"x" * 50 + b'"}, ' + b"[" * 5000 + b"]" * 5000 + b", 3]"
    large, deep, last = iter_array(io.BytesIO(text), 10_000)
    assert large == {"a": "x" * 50} and deep.reason == "too_deeply_nested" and last == 3
    large, deep, last = iter_array(io.BytesIO(text), 40)
    assert large == BadRecord(jsonstream.RejectReason.RECORD_TOO_LARGE, "59 bytes > 40")
    assert deep == BadRecord(jsonstream.RejectReason.RECORD_TOO_LARGE, "10000 bytes > 40") and last == 3
    for text, message in [(b"[1, 2", "expected .,. or .]. after a list element at byte 5"),
                          (b'{"a": 1}', "expected a JSON list"), (b"[1] x", "unexpected data after"),
                          (b'["abc', "ends inside")]:
        with pytest.raises(JsonStreamError, match=message):
            list(iter_array(io.BytesIO(text), 100))
    with pytest.raises(JsonStreamError, match=r"no \['annotations'\] list"):
        list(iter_object_lists(io.BytesIO(b'{"images": []}'), frozenset({"images", "annotations"}), 100))
