"""Streaming set-up for real deployments: shards from a real S3 server (moto_server on loopback),
start-up after a crash that left shared memory behind, and two ranks splitting an epoch."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.s3_server import S3Server, start_moto_server
from tests.trainer.data.data_corpus import CORPUS_ROWS, corpus_rows, write_mds
from trainer.config import RunConfig
from trainer.data.dataset import PretrainDataset
from trainer.data.loader import build_train_loader, prepare_streaming_env, split_location

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with start_moto_server() as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


def test_shards_from_s3_give_the_same_batches_as_local(
    s3_env: S3Server, make_cfg: Callable[..., RunConfig], tmp_path: Path
) -> None:
    rows = corpus_rows(12)
    remote = write_mds(f"{s3_env.create_bucket('round-trip')}/pretrain/train", rows)
    local = write_mds(tmp_path / "local", rows)
    from_s3 = [dict(b) for b in build_train_loader(make_cfg(f"data.train={remote}"), rank=0, world_size=1)]
    from_disk = [dict(b) for b in build_train_loader(make_cfg(f"data.train={local}"), rank=0, world_size=1)]
    assert len(from_s3) == len(from_disk) == 3
    for a, b in zip(from_s3, from_disk):
        assert all(torch.equal(a[key], b[key]) for key in a)
    cache, _ = split_location(remote, str(tmp_path / "cache"), "train")
    assert re.fullmatch(r"train-[0-9a-f]{16}", Path(cache).name)
    assert sorted(p.name for p in Path(cache).glob("shard.*.mds"))  # the downloaded shards


def test_cache_limit_reaches_streaming_for_remote_splits_only(
    s3_env: S3Server, make_cfg: Callable[..., RunConfig], tmp_path: Path
) -> None:
    remote = write_mds(f"{s3_env.create_bucket('limited')}/train", corpus_rows(8))
    local = write_mds(tmp_path / "local", corpus_rows(8))
    limited = build_train_loader(make_cfg(f"data.train={remote}", "data.cache_limit=5mb"), rank=0, world_size=1)
    assert limited.dataset.cache_limit == 5 * 2**20  # streaming reads "mb" as MiB
    assert len([dict(b) for b in limited]) == 2
    in_place = build_train_loader(make_cfg(f"data.train={local}", "data.cache_limit=5mb"), rank=0, world_size=1)
    assert in_place.dataset.cache_limit is None  # a local split is read in place: nothing to evict


def _open_and_crash(cfg: RunConfig, remote: str, cache: str) -> None:
    """A rank killed with SIGKILL together with its process group (its multiprocessing resource
    tracker included, which would otherwise unlink the shared memory): nothing is cleaned up."""
    os.setsid()
    dataset = PretrainDataset(local=cache, remote=remote, aug=cfg.data.augment, img_size=64, max_words=30, seed=0,
                              batch_size=4, shuffle=False)
    os.killpg(0, signal.SIGKILL)
    del dataset  # never reached: the dataset stays registered


def _try_to_build(cfg: RunConfig, outcome: Any) -> None:
    try:
        build_train_loader(cfg, rank=0, world_size=1)
        outcome.put("built")
    except ValueError as err:
        outcome.put(str(err))


def test_stale_shared_memory_after_a_crash_is_cleaned_at_start_up(
    s3_env: S3Server, make_cfg: Callable[..., RunConfig], corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = write_mds(f"{s3_env.create_bucket('crash')}/train", corpus_rows(8))
    cfg = make_cfg(f"data.train={remote}")
    cache, _ = split_location(remote, cfg.data.cache_dir, "train")
    alive = build_train_loader(make_cfg(), rank=0, world_size=1)  # another run's dataset, still in use
    alive_segment = Path("/dev/shm") / f"{alive.dataset._shm_prefix_int:06}_locals"
    crashed = FORK.Process(target=_open_and_crash, args=(cfg, remote, cache))
    crashed.start()
    crashed.join(60)
    assert crashed.exitcode == -signal.SIGKILL
    # Without the clean-up, a restarted run fails. (Tried in a child: streaming keeps every segment
    # it ever attached mapped until its process exits, which would keep this one "alive" here.)
    outcome = FORK.Queue()
    restart = FORK.Process(target=_try_to_build, args=(cfg, outcome))
    restart.start()
    assert "Reused local directory" in outcome.get(timeout=60)
    restart.join(30)
    # deepspeed's launcher exports LOCAL_SIZE; streaming reads LOCAL_WORLD_SIZE
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # an inherited value: the launcher's LOCAL_SIZE must win,
    monkeypatch.setenv("LOCAL_SIZE", "1")  # and monkeypatch restores what prepare_streaming_env writes
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    prepare_streaming_env()
    assert os.environ["LOCAL_WORLD_SIZE"] == "1" and os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert alive_segment.exists()
    assert len(list(build_train_loader(cfg, rank=0, world_size=1))) == 2
    assert len(list(alive)) == CORPUS_ROWS // 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, port: int, cfg: RunConfig, results: Any) -> None:
    """One rank as the deepspeed launcher starts it: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_SIZE."""
    try:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        os.environ.pop("LOCAL_WORLD_SIZE", None)
        torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
        prepare_streaming_env()
        loader = build_train_loader(cfg, rank=rank, world_size=2)
        epochs = [[b["index"].tolist() for b in loader] for _ in range(2)]
        results.put((rank, os.environ["LOCAL_WORLD_SIZE"], len(loader), epochs))
        torch.distributed.destroy_process_group()
    except BaseException as err:  # report, so that the test fails with the reason instead of a timeout
        results.put((rank, "error", repr(err), None))
        raise


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_ranks_split_each_epoch(make_cfg: Callable[..., RunConfig]) -> None:
    cfg = make_cfg()
    results = FORK.Queue()
    port = _free_port()
    ranks = [FORK.Process(target=_rank_main, args=(rank, port, cfg, results)) for rank in range(2)]
    for process in ranks:
        process.start()
    reports = sorted(results.get(timeout=150) for _ in ranks)
    for process in ranks:
        process.join(30)
    for rank, local_world_size, steps, _ in reports:
        assert local_world_size == "2", reports[rank]
        assert steps == CORPUS_ROWS // 2 // 4
    for epoch in range(2):
        per_rank = [[i for batch in report[3][epoch] for i in batch] for report in reports]
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == list(range(CORPUS_ROWS))
    assert reports[0][3][0] != reports[0][3][1]  # reshuffled between epochs
