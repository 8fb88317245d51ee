"""Fixtures of the multi-host tests: namespace clusters (see hosts.py for the API)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.trainer.multinode.hosts import Cluster, namespaces_unavailable, sweep
from tests.trainer.multinode.trainers import CORPUS_ROWS


@pytest.fixture(scope="session")
def namespaces() -> None:
    """Skips (with the reason) where namespaces cannot be made; removes what dead sessions left."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    sweep()


@pytest.fixture
def make_cluster(namespaces: None, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """make_cluster(n_hosts, shm_size="1g") -> a Cluster, torn down when the test ends, pass or fail."""
    made: list[Cluster] = []

    def make(n_hosts: int, shm_size: str = "1g") -> Cluster:
        cluster = Cluster.create(n_hosts, tmp_path / f"cluster{len(made)}", shm_size=shm_size)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """Two hosts, node0 (198.18.0.1) and node1 (198.18.0.2), joined by the hub's switch."""
    return make_cluster(2)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic MDS corpus on the shared filesystem: train (CORPUS_ROWS rows) and eval (8 rows)."""
    from dataprep.synth import write_demo_corpus

    root = tmp_path_factory.mktemp("multinode-corpus")
    write_demo_corpus(root, n_train=CORPUS_ROWS, n_eval=8, seed=0, size=64)
    return root
