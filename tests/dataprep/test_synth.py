"""The synthetic demo corpus: captions say what is drawn, eval images are distinct, output is deterministic."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

from dataprep.cli import main
from dataprep.reader import iter_rows, load_manifest
from dataprep.storage import open_store
from dataprep.synth import (
    BACKGROUNDS,
    COLOURS,
    POSITION_WORDS,
    POSITIONS,
    SHAPE_WORDS,
    describe_scene,
    draw_scene,
    sample_scene,
    write_demo_corpus,
)

SIZE = 64


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, colour, strict=True))


def test_pixels_and_captions_agree_with_the_scene() -> None:
    rng = random.Random(0)
    for _ in range(200):
        scene = sample_scene(rng)
        image = draw_scene(scene, SIZE)
        assert image.size == (SIZE, SIZE) and image.mode == "RGB"
        assert len({s.position for s in scene.shapes}) == len(scene.shapes) in (1, 2, 3)
        for shape in scene.shapes:  # the centre of every shape has its colour
            fx, fy = POSITIONS[shape.position]
            assert _near(image.getpixel((int(fx * SIZE), int(fy * SIZE))), COLOURS[shape.colour]), shape
        assert _near(image.getpixel((1, 1)), BACKGROUNDS[scene.background])  # no slot reaches the corner
        caption = describe_scene(scene, rng)
        assert len(caption.split()) <= 20
        for shape in scene.shapes:
            assert shape.colour in caption.split()
            assert any(word in caption for pair in SHAPE_WORDS[shape.kind] for word in pair)
        if len(scene.shapes) == 1:
            assert any(words in caption for words in POSITION_WORDS[scene.shapes[0].position])


def _colour_shape_words(caption: str) -> frozenset[str]:
    words = set(caption.split())
    return frozenset(words & (set(COLOURS) | {w for pairs in SHAPE_WORDS.values() for pair in pairs for w in pair}))


def test_demo_corpus_rows_and_determinism(tmp_path: Path) -> None:
    write_demo_corpus(tmp_path / "a", n_train=30, n_eval=25, seed=1, size=SIZE)
    train = list(iter_rows(open_store(tmp_path / "a" / "train")))
    evals = list(iter_rows(open_store(tmp_path / "a" / "eval")))
    assert (len(train), len(evals)) == (30, 25)
    for row, phrasings in [(r, 3) for r in train] + [(r, 5) for r in evals]:
        assert isinstance(row["caption"], list) and len(set(row["caption"])) == phrasings
        image = Image.open(io.BytesIO(row["image"]))
        assert (image.format, image.size, row["width"], row["height"]) == ("JPEG", (SIZE, SIZE), SIZE, SIZE)
        colours = {frozenset(set(c.split()) & set(COLOURS)) for c in row["caption"]}
        assert len(colours) == 1, "every phrasing of an image names the same colours"
    assert len({row["sample_id"] for row in train + evals}) == 55
    contents = [frozenset(_colour_shape_words(c) for c in row["caption"]) for row in evals]
    assert len(set(contents)) == len(evals), "eval images must differ in what their captions say"

    write_demo_corpus(tmp_path / "b", n_train=30, n_eval=25, seed=1, size=SIZE)
    write_demo_corpus(tmp_path / "c", n_train=30, n_eval=25, seed=2, size=SIZE)
    manifest = {name: load_manifest(open_store(tmp_path / name / "train")) for name in "abc"}
    assert manifest["a"] == manifest["b"]
    assert manifest["a"].shards[0].sha256 != manifest["c"].shards[0].sha256


def test_synth_command_writes_verifiable_datasets(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["synth", str(out), "--train", "6", "--eval", "4", "--size", "48"]) == 0
    assert main(["verify", str(out / "train")]) == 0
    assert main(["verify", str(out / "eval")]) == 0
    assert load_manifest(open_store(out / "eval")).samples == 4
    assert main(["synth", str(out), "--train", "5", "--eval", "2"]) == 0, "a new corpus replaces the old one"
    assert load_manifest(open_store(out / "train")).samples == 5
    assert main(["synth", str(out), "--train", "5", "--eval", "2", "--size", "8"]) == 2
