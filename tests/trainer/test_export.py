"""Export: tcl (the full state, read back exactly), official (what Retrieval.py's own loading code does with
it, on the official fine-tuning model's key names), hf (transformers and timm load it and compute our
encoders' outputs), and the CLI's errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trainer.weights.official_files import official_interpolate_pos_embed, official_keys
from trainer import export as export_cli
from trainer.config import RunConfig, load
from trainer.model import build_model
from trainer.weights.export import CROSS_ATTENTION_FILE, write_hf, write_official, write_tcl
from trainer.weights.load import Checkpoint, read_checkpoint
from trainer.weights.state import full_state


@pytest.fixture(scope="module")
def trained() -> tuple[RunConfig, Checkpoint]:
    """A tiny model whose momentum encoder and queue pointer differ from their initial values."""
    cfg = load("tiny", ["model.text.dropout=0"])
    torch.manual_seed(0)
    model, teacher, queues = build_model(cfg)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
        queues.ptr.fill_(5)
        model.temp.fill_(0.06)
    state = {k: v.clone() for k, v in full_state(model, teacher, queues).items()}
    return cfg, Checkpoint(state=state, layout="step directory", source="memory", config=cfg)


def _online(cfg: RunConfig, checkpoint: Checkpoint):
    model, _, _ = build_model(cfg)
    online = {k.removeprefix("online."): v for k, v in checkpoint.state.items() if k.startswith("online.")}
    model.load_state_dict(online)
    return model.eval()


def test_tcl_export_reads_back_the_whole_state_and_config(trained, tmp_path: Path) -> None:
    cfg, checkpoint = trained
    out = write_tcl(checkpoint, cfg, tmp_path / "run.safetensors")
    back = read_checkpoint(out)
    assert back.layout == "tcl" and back.config == cfg
    assert sorted(back.state) == sorted(checkpoint.state)
    assert all(torch.equal(back.state[k], v) for k, v in checkpoint.state.items())
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file was renamed"


def test_official_export_is_what_retrieval_py_loads(trained, tmp_path: Path) -> None:
    """Retrieval.py: checkpoint['model'], pos_embed (online and momentum) interpolated to the fine-tuning
    resolution, 'bert.' removed from the keys, load_state_dict(strict=False) into models/model_retrieval.py's
    ALBEF. On its key names (data/official_keys_retrieval_tiny.json, 96 px): only idx_queue is missing, only
    the MLM heads are unexpected, every shape fits."""
    cfg, checkpoint = trained
    out = write_official(checkpoint, cfg, tmp_path / "tcl.pth")
    state_dict = torch.load(out, map_location="cpu", weights_only=True)["model"]
    for key in ("visual_encoder.pos_embed", "visual_encoder_m.pos_embed"):
        state_dict[key] = official_interpolate_pos_embed(state_dict[key], 6)
    for key in list(state_dict.keys()):
        if "bert" in key:
            state_dict[key.replace("bert.", "")] = state_dict.pop(key)
    target = official_keys("retrieval_tiny")["keys"]
    assert sorted(set(target) - set(state_dict)) == ["idx_queue"]
    assert all(".cls.predictions." in k for k in set(state_dict) - set(target))
    assert {k: list(v.shape) for k, v in state_dict.items() if k in target and list(v.shape) != target[k][0]} == {}
    ours = checkpoint.state
    assert torch.equal(state_dict["text_encoder.encoder.layer.3.crossattention.self.value.weight"],
                       ours["online.text.bert.encoder.layer.3.crossattention.self.value.weight"])
    assert torch.equal(state_dict["text_encoder_m.embeddings.word_embeddings.weight"],
                       ours["momentum.text.bert.embeddings.word_embeddings.weight"])
    assert state_dict["temp"].shape == () and float(state_dict["temp"]) == pytest.approx(0.06)
    assert torch.equal(state_dict["image_queue"], ours["queues.image_queue"].t())


def test_hf_export_loads_in_transformers_and_timm_with_our_outputs(trained, tmp_path: Path) -> None:
    import timm
    from transformers import AutoTokenizer, BertForMaskedLM, BertModel

    cfg, checkpoint = trained
    out = write_hf(checkpoint, cfg, tmp_path / "hf")
    model = _online(cfg, checkpoint)
    torch.manual_seed(1)
    ids = torch.randint(1000, 3000, (3, 11))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0

    _, info = BertForMaskedLM.from_pretrained(out / "text", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    bert = BertModel.from_pretrained(out / "text", add_pooling_layer=False).eval()
    with torch.no_grad():
        hf_hidden = bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        ours = model.text.encode_text(ids, mask)
    # transformers runs every layer as a text layer; after the text encoder's layers it equals ours
    torch.testing.assert_close(hf_hidden[cfg.model.text.text_layers], ours, rtol=1e-4, atol=1e-5)

    from safetensors.torch import load_file

    cross = load_file(out / "text" / CROSS_ATTENTION_FILE)
    want = {k.removeprefix("online.text."): v for k, v in checkpoint.state.items() if ".crossattention." in k
            and k.startswith("online.")}
    assert sorted(cross) == sorted(want) and all(torch.equal(cross[k], v) for k, v in want.items())

    tokenizer = AutoTokenizer.from_pretrained(out / "text")
    text = ["a red cube left of a blue ball"]
    assert tokenizer(text)["input_ids"] == model_tokens(cfg, text)

    vit = timm.create_model(f"local-dir:{out / 'vision'}", pretrained=True).eval()
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(vit.forward_features(image), model.visual_encoder.forward_features(image))


def model_tokens(cfg: RunConfig, texts: list[str]) -> list[list[int]]:
    from trainer.data.tokenizer import load_tokenizer

    return load_tokenizer(cfg.model.text.tokenizer)(texts)["input_ids"]


def test_export_cli_converts_and_refuses_bad_input(trained, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg, checkpoint = trained
    tcl = write_tcl(checkpoint, cfg, tmp_path / "run.safetensors")
    assert export_cli.main([str(tcl), str(tmp_path / "run.pth"), "--format", "official"]) == 0
    back = read_checkpoint(tmp_path / "run.pth")  # official -> ours: the same state again
    assert back.layout == "official" and all(torch.equal(back.state[k], v) for k, v in checkpoint.state.items())
    # an official file carries no config of ours: the architecture comes from --config
    assert export_cli.main([str(tmp_path / "run.pth"), str(tmp_path / "again.safetensors"), "--format", "tcl",
                            "--config", "tiny", "model.text.dropout=0"]) == 0
    assert read_checkpoint(tmp_path / "again.safetensors").config == cfg
    capsys.readouterr()
    # ... and one that does not fit it is refused, naming the tensor
    assert export_cli.main([str(tmp_path / "run.pth"), str(tmp_path / "paper.safetensors"), "--format", "tcl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not fit the model's config" in err and err.count("\n") == 1
    assert not (tmp_path / "paper.safetensors").exists()
    (tmp_path / "notes.txt").write_text("hello")
    assert export_cli.main([str(tmp_path / "notes.txt"), str(tmp_path / "x.pth"), "--format", "official"]) == 2
    assert "Known layouts" in capsys.readouterr().err and not (tmp_path / "x.pth").exists()
