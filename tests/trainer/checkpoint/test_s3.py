"""s3:// output against a real S3 server (moto, on loopback): uploads, the pointer after every part is
there, remote pruning, and a resume on a node with an empty staging folder that downloads only its files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.s3_server import start_moto_server
from trainer.checkpoint.layout import POINTER, tag_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def s3():
    with start_moto_server() as server:
        yield server


def test_checkpoints_live_in_the_bucket(worker, s3, tmp_path: Path) -> None:
    bucket = s3.create_bucket("ckpt")
    client = s3.client()
    staging = tmp_path / "staging"
    common = [f"checkpoint.staging_dir={staging}", "checkpoint.keep_last=2"]
    staging.mkdir()
    (staging / "metrics.jsonl").write_text("".join(f'{{"kind": "train", "step": {s}}}\n' for s in (1, 2, 3, 4)))
    (first,) = worker(f"{bucket}/runs/a", "--steps", "3", "--save", "1,2,3", *common, env=s3.env)
    assert first["saved"][-1] == f"{bucket}/runs/a/checkpoints/{tag_for(3)}"

    def keys() -> set[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket="ckpt", Prefix="runs/a/")
        return {o["Key"].removeprefix("runs/a/") for p in pages for o in p.get("Contents", [])}

    remote = keys()
    assert {k.split("/")[1] for k in remote if k.startswith("checkpoints/step_")} == {tag_for(2), tag_for(3)}
    assert {f"checkpoints/{tag_for(3)}/rank_0.json", f"checkpoints/{tag_for(3)}/rng_rank0.pt"} <= remote
    assert client.get_object(Bucket="ckpt", Key=f"runs/a/checkpoints/{POINTER}")["Body"].read() == tag_for(3).encode()
    assert "metrics.jsonl" in remote  # the run's other outputs follow its checkpoints

    shutil.rmtree(staging)  # a new node: nothing local
    (resumed,) = worker(f"{bucket}/runs/a", "--steps", "3", "--resume", "auto", *common, env=s3.env)
    assert resumed["resumed"] == tag_for(3) and resumed["weights"] == first["weights"]
    assert sorted(p.name for p in (staging / "checkpoints").iterdir() if p.is_dir()) == [tag_for(3)]
    assert (staging / "metrics.jsonl").read_text().count("step") == 3  # fetched back, cut at the resumed step
