"""trainer.control_plane: the checkpoint digest against coreutils, the client against a recording HTTP server."""

from __future__ import annotations

import json
import math
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trainer.control_plane import ControlPlane, checkpoint_digest


def _coreutils_digest(root: Path) -> str:
    """sha256sum of each file (sorted bytewise by relative path), then sha256sum of that listing."""
    script = "find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
    out = subprocess.run(["bash", "-c", script], cwd=root, check=True, capture_output=True, text=True).stdout
    return out.split()[0]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    root = tmp_path / "global_step6"
    (root / "zero" / "deep").mkdir(parents=True)
    (root / "mp_rank_00_model_states.pt").write_bytes(bytes(range(256)) * 40)
    (root / "zero" / "bf16_zero_pp_rank_0_optim_states.pt").write_bytes(b"\x00" * 4097)
    (root / "zero" / "deep" / "a b.json").write_text('{"step": 6}')
    (root / "Upper.txt").write_text("sorted before lower-case names")
    return root


def test_digest_matches_coreutils_and_size_is_the_sum(checkpoint: Path) -> None:
    digest, size = checkpoint_digest(checkpoint)
    assert digest == _coreutils_digest(checkpoint)
    assert size == 256 * 40 + 4097 + len('{"step": 6}') + len("sorted before lower-case names")


def test_digest_names_content_not_place(checkpoint: Path, tmp_path: Path) -> None:
    before, _ = checkpoint_digest(checkpoint)
    moved = checkpoint.rename(tmp_path / "elsewhere")
    assert checkpoint_digest(moved)[0] == before
    (moved / "zero" / "deep" / "a b.json").write_text('{"step": 7}')
    assert checkpoint_digest(moved)[0] != before


def test_digest_of_a_single_file_and_of_nothing(tmp_path: Path) -> None:
    single = tmp_path / "model.pt"
    single.write_bytes(b"weights")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"weights")
    assert checkpoint_digest(single) == checkpoint_digest(folder)  # a one-line manifest under its own name
    with pytest.raises(FileNotFoundError):
        checkpoint_digest(tmp_path / "missing")


class Recorder:
    """A loopback HTTP server that records requests and answers with scripted status codes."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict]] = []
        self.script: list[int] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                recorder.requests.append((self.path, dict(self.headers), body))
                code = recorder.script.pop(0) if recorder.script else 200
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"detail": "scripted"}')

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.server.shutdown()


def test_heartbeat_posts_the_protocol_body_with_the_run_token(recorder: Recorder) -> None:
    client = ControlPlane(recorder.url, "ab" * 16, "secret-run-token", retry_delay=0.01)
    client.heartbeat(12, 100, 0.5, 321.5, {"loss": 2.5, "itm": math.nan, "eval/r_mean": 40.0})
    [(path, headers, body)] = recorder.requests
    assert path == f"/v1/runs/{'ab' * 16}/heartbeat"
    assert headers["Authorization"] == "Bearer secret-run-token"
    assert body == {"step": 12, "total_steps": 100, "epoch": 0.5, "samples_per_sec": 321.5,
                    "metrics": {"loss": 2.5, "itm": None, "eval/r_mean": 40.0}}
    assert "secret-run-token" not in repr(client)


def test_register_checkpoint_sends_digest_size_and_uri(recorder: Recorder, checkpoint: Path) -> None:
    ControlPlane(recorder.url, "r1", "t", retry_delay=0.01).register_checkpoint(checkpoint, 6, {"loss": 1.0})
    [(path, _, body)] = recorder.requests
    assert path == "/v1/runs/r1/checkpoints"
    digest, size = checkpoint_digest(checkpoint)
    assert body == {"uri": checkpoint.resolve().as_uri(), "step": 6, "metrics": {"loss": 1.0},
                    "size_bytes": size, "digest": digest}


def test_server_errors_are_retried_and_refusals_are_not(recorder: Recorder, checkpoint: Path) -> None:
    client = ControlPlane(recorder.url, "r1", "t", retry_delay=0.01)
    recorder.script = [503, 502]
    client.register_checkpoint(checkpoint, 6, {})
    assert len(recorder.requests) == 3  # two 5xx, then accepted
    recorder.requests.clear()
    recorder.script = [409]
    client.register_checkpoint(checkpoint, 6, {})
    assert len(recorder.requests) == 1
    recorder.requests.clear()
    recorder.script = [500, 500, 500, 500]
    client.register_checkpoint(checkpoint, 6, {})  # three tries, then it gives up quietly
    assert len(recorder.requests) == 3
    recorder.requests.clear()
    recorder.script = [500]
    client.heartbeat(1, None, None, None, {})  # one try: the next heartbeat supersedes it
    assert len(recorder.requests) == 1


def test_an_unreachable_api_never_raises_into_training(caplog: pytest.LogCaptureFixture) -> None:
    client = ControlPlane("http://127.0.0.1:9", "r1", "t", timeout=0.5, retry_delay=0.01)  # port 9: nothing listens
    client.heartbeat(1, 10, 0.1, 1.0, {"loss": 1.0})
    assert any("unreachable" in r.message for r in caplog.records)


def test_from_env_needs_all_three_variables() -> None:
    full = {"TCL_API_URL": "http://127.0.0.1:1/", "TCL_RUN_ID": "abc", "TCL_RUN_TOKEN": "tok"}
    client = ControlPlane.from_env(full)
    assert client is not None and client.base == "http://127.0.0.1:1/v1/runs/abc"
    for missing in full:
        assert ControlPlane.from_env({k: v for k, v in full.items() if k != missing}) is None
