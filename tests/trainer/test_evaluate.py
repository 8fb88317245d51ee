"""tcl-eval on an annotation file in the official retrieval format: the figures equal the evaluation run
directly on the same inputs (at the training resolution, and at a higher one with the position embeddings
interpolated as the official code does), the JSON is written next to the checkpoint, and bad input is one
line, exit 2, nothing written."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.trainer.weights.official_files import official_interpolate_pos_embed
from trainer import evaluate
from trainer.config import load
from trainer.data.loader import tokenize
from trainer.data.tokenizer import load_tokenizer
from trainer.data.transforms import CLIP_MEAN, CLIP_STD
from trainer.eval.retrieval import evaluate_retrieval
from trainer.model import build_model
from trainer.weights.export import write_official, write_tcl
from trainer.weights.load import Checkpoint
from trainer.weights.state import full_state

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("coco")
    (root / "val2014").mkdir()
    entries = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        pixels = np.zeros((40, 48, 3), np.uint8) + np.array(rgb, np.uint8)
        pixels[10 + i * 5 : 20 + i * 5, 8:30] = 255  # a white bar at a different height
        Image.fromarray(pixels).save(root / "val2014" / f"{name}.jpg")
        entries.append({"image": f"val2014/{name}.jpg", "caption": [f"A {name} square.", f"a picture that is {name}"]})
    annotation = root / "coco_test.json"
    annotation.write_text(json.dumps(entries))
    return annotation, root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    cfg = load("tiny", ["model.text.dropout=0", "eval.k_test=3", "eval.batch_size=3", "engine.precision=fp32"])
    torch.manual_seed(0)
    model, teacher, queues = build_model(cfg)
    state = {k: v.clone() for k, v in full_state(model, teacher, queues).items()}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    write_tcl(Checkpoint(state, "memory", "memory", cfg), cfg, path)
    return cfg, model.eval(), path


def _direct(cfg, model, annotation: Path, root: Path, size: int, bf16: bool = False) -> dict[str, float]:
    """The evaluation on inputs prepared here: PIL bicubic resize, CLIP normalisation, captions numbered in
    order; bf16 as DeepSpeed trains: bf16 weights under autocast."""
    entries = json.loads(annotation.read_text())
    images = []
    for entry in entries:
        pixels = np.asarray(Image.open(root / entry["image"]).convert("RGB").resize((size, size), Image.BICUBIC))
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
        images.append((x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1))
    texts = [c.lower().replace(".", "") for e in entries for c in e["caption"]]
    img2txt = [[2 * i, 2 * i + 1] for i in range(len(entries))]
    ids, mask = tokenize(texts, load_tokenizer(cfg.model.text.tokenizer), cfg.data.eval_max_tokens)
    loader = torch.utils.data.DataLoader(torch.stack(images), batch_size=cfg.eval.batch_size)
    return evaluate_retrieval(
        copy.deepcopy(model).to(torch.bfloat16) if bf16 else model, loader, ids, mask, img2txt,
        [t // 2 for t in range(len(texts))], k_test=cfg.eval.k_test, batch_size=cfg.eval.batch_size,
        device=torch.device("cpu"), autocast=torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_annotation_file_figures_equal_the_direct_evaluation(corpus, checkpoint, capsys, precision: str) -> None:
    annotation, root = corpus
    cfg, model, path = checkpoint
    args = [str(path), "--annotation", str(annotation), "--image-root", str(root), "--num-workers", "0",
            "--precision", precision]
    assert evaluate.main(args) == 0
    out = capsys.readouterr().out
    assert "TR (i2t)" in out and "IR (t2i)" in out
    record = json.loads((path.parent / "tiny.retrieval-coco_test-64px.json").read_text())
    assert record["images"] == 4 and record["texts"] == 8 and record["layout"] == "tcl" and record["image_size"] == 64
    assert record["precision"] == precision
    want = _direct(cfg, model, annotation, root, 64, bf16=precision == "bf16")
    assert record["recall"] == pytest.approx(want, abs=1e-9)


def test_higher_resolution_interpolates_pos_embed_as_the_official_code(corpus, checkpoint, tmp_path: Path) -> None:
    annotation, root = corpus
    cfg, model, path = checkpoint
    output = tmp_path / "at96.json"
    args = [str(path), "--annotation", str(annotation), "--image-root", str(root), "--image-size", "96",
            "--num-workers", "0", "--output", str(output)]
    assert evaluate.main(args) == 0
    cfg96 = load("tiny", ["model.text.dropout=0", "eval.k_test=3", "eval.batch_size=3", "model.vision.img_size=96",
                          "model.local_grid=2"])
    big, _, _ = build_model(cfg96)
    state = model.state_dict()
    state["visual_encoder.pos_embed"] = official_interpolate_pos_embed(state["visual_encoder.pos_embed"], 6)
    big.load_state_dict(state)
    record = json.loads(output.read_text())
    assert record["image_size"] == 96
    assert record["recall"] == pytest.approx(_direct(cfg96, big.eval(), annotation, root, 96), abs=1e-9)


def test_bad_input_is_one_line_exit_2_and_nothing_written(corpus, checkpoint, tmp_path: Path, capsys) -> None:
    annotation, root = corpus
    cfg, _, path = checkpoint
    official = write_official(Checkpoint(load_file(path), "tcl", str(path), cfg), cfg, tmp_path / "tiny.pth")
    missing = tmp_path / "missing.json"
    entries = [{"image": "val2014/red.jpg", "caption": ["a"]}, {"image": "x.jpg", "caption": ["b"]}]
    missing.write_text(json.dumps(entries))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"images": ["red.jpg"]}))
    notes = tmp_path / "notes.txt"
    notes.write_text("no weights here")
    cases = [
        ([str(path), "--annotation", str(missing)], "1 of 2 images are missing, e.g. .*x.jpg"),
        ([str(path), "--annotation", str(wrong)], "expected a non-empty JSON list"),
        ([str(notes), "--annotation", str(annotation)], "neither a torch file nor safetensors. Known layouts"),
        ([str(official), "--annotation", str(annotation)], "does not fit the model's config"),  # default: the paper's
    ]
    for args, message in cases:
        output = tmp_path / "out.json"
        assert evaluate.main([*args, "--image-root", str(root), "--num-workers", "0", "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert re.search(message, err), err
        assert not output.exists() and not list(tmp_path.glob(".*.tmp"))
