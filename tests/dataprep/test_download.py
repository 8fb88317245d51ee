"""`tcl-dataprep download` against real HTTP servers on loopback (127.0.0.1-3 as three hosts) that serve
generated images and planted faults; every planted fault must come back as its reject reason, every good
image as a shard member, and a download killed with SIGKILL must resume to the same shards."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from dataprep.download import DownloadConfig, download
from dataprep.records import Reject
from dataprep.sources import SourceSpec, read_source

REPO = Path(__file__).resolve().parents[2]
SLOW_SECONDS = 6.0


def _image(n: int, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24 + n % 7, 20 + n % 5), (n * 37 % 256, n * 91 % 256, 128)).save(out, fmt)
    return out.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _FaultServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        state = self.server.state
        host = self.server.server_address[0]
        # A timed-out client frees its slot while /slow/ still sleeps here: those are not counted in flight.
        counted = not self.path.startswith("/slow/")
        with state.lock:
            state.requests.append((host, self.path, time.monotonic()))
            state.in_flight[host] += counted
            state.max_in_flight[host] = max(state.max_in_flight[host], state.in_flight[host])
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up, or a cut body
                self._answer(host)
        finally:
            with state.lock:
                state.in_flight[host] -= counted

    def _answer(self, host: str) -> None:
        kind, _, name = self.path.strip("/").partition("/")
        n = int(name.split(".")[0]) if name[:1].isdigit() else 0
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        if kind == "robots.txt":
            self._send(200, b"User-agent: *\nDisallow: /private/\n")
        elif kind == "img" and host == "127.0.0.3" and self.server.state.first_time(self.path):
            self._send(429, b"slow down", {"Retry-After": "1"})  # this host answers each path's first request so
        elif kind in ("img", "private"):
            self._send(200, _image(n, fmt), {"Content-Type": f"image/{fmt.lower()}"})
        elif kind == "missing":
            self._send(404, b"not found")
        elif kind == "forbidden":
            self._send(403, b"forbidden")
        elif kind == "error":
            self._send(500, b"oops")
        elif kind == "always429":
            self._send(429, b"slow down", {"Retry-After": "1"})
        elif kind == "slow":
            time.sleep(SLOW_SECONDS)
            self._send(200, _image(n, fmt))
        elif kind == "html":
            self._send(200, b"<!doctype html><html><body>a page, not a picture</body></html>",
                       {"Content-Type": "text/html"})
        elif kind == "loop":
            self._send(302, b"", {"Location": f"/loop/{n}"})
        elif kind == "huge":  # announces 5 GB, sends 1 KiB and hangs up
            self._send(200, b"\xff\xd8" + b"\0" * 1022, {"Content-Type": "image/jpeg"}, length=5 << 30)
            self.close_connection = True
        elif kind == "truncated":
            data = _image(n, "PNG")
            self._send(200, data[: len(data) // 2], {"Content-Type": "image/png"}, length=len(data))
            self.close_connection = True
        elif kind == "noai":
            self._send(200, _image(n, fmt), {"X-Robots-Tag": "noai, noimageai"})
        elif kind == "ours":
            self._send(200, _image(n, fmt), {"X-Robots-Tag": "tcl-dataprep: noimageai"})
        elif kind == "otherbot":
            self._send(200, _image(n, fmt), {"X-Robots-Tag": "otherbot: noai"})  # not addressed to us
        else:
            self._send(404)


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, float]] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._seen: set[str] = set()

    def first_time(self, path: str) -> bool:
        with self.lock:
            first = path not in self._seen
            self._seen.add(path)
            return first


class _FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[dict[str, str], _State]]:
    """Three "hosts" (loopback addresses) with one shared request log; ip -> base URL."""
    state = _State()
    servers = []
    for ip in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        server = _FaultServer((ip, 0), _Handler)
        server.state = state
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
    try:
        yield {s.server_address[0]: f"http://{s.server_address[0]}:{s.server_address[1]}" for s in servers}, state
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _planted(base: dict[str, str]) -> tuple[list[str], int, Counter[str]]:
    """CC3M lines (caption<TAB>url), with what must be accepted and rejected (by reason)."""
    one, two, three = base["127.0.0.1"], base["127.0.0.2"], base["127.0.0.3"]
    good = ([f"{one}/img/{i}.{'png' if i % 3 == 0 else 'jpg'}" for i in range(18)]
            + [f"{two}/img/{i}.jpg" for i in range(100, 112)]
            + [f"{three}/img/{i}.jpg" for i in range(200, 204)]  # each answered 429 once, then the image
            + [f"{one}/otherbot/7.jpg"])
    faults = {
        "http_404": [f"{one}/missing/1.jpg", f"{two}/missing/2.jpg", f"{one}/missing/3.jpg"],
        "http_4xx": [f"{one}/forbidden/1.jpg"],
        "http_5xx": [f"{two}/error/1.jpg"],
        "rate_limited": [f"{three}/always429/1.jpg"],
        "timeout": [f"{one}/slow/1.jpg", f"{two}/slow/2.jpg"],
        "not_an_image": [f"{one}/html/1.jpg", f"{two}/html/2.jpg"],
        "redirect_loop": [f"{one}/loop/1.jpg"],
        "file_too_large": [f"{two}/huge/1.jpg"],
        "truncated_download": [f"{one}/truncated/1.png", f"{two}/truncated/2.png"],
        "opted_out": [f"{one}/noai/1.jpg", f"{two}/ours/2.jpg", f"{one}/private/3.jpg"],
        "bad_url": ["ftp://127.0.0.1/a.jpg"],
    }
    urls = good + [url for group in faults.values() for url in group]
    order = sorted(range(len(urls)), key=lambda i: (i * 7919) % len(urls))  # interleave hosts and faults
    lines = [f"caption number {i}\t{urls[i]}" for i in order] + ["a line without a url"]
    expected = Counter({reason: len(group) for reason, group in faults.items()}) + Counter(malformed_record=1)
    return lines, len(good), expected


def _config(out: Path, source: Path, **extra) -> DownloadConfig:
    fields = dict(out=str(out), source=SourceSpec(format="cc3m", path=str(source)), concurrency=16,
                  per_host_connections=3, per_host_rate=100, timeout=2.0, retries=1, backoff=0.05, max_backoff=1.0,
                  max_redirects=4, chunk_size=10) | extra
    return DownloadConfig.model_validate(fields)


def _shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


@pytest.mark.timeout(120)
def test_accepted_and_rejected_are_what_was_planted_and_the_shards_convert(hosts, tmp_path: Path) -> None:
    base, state = hosts
    lines, good, expected = _planted(base)
    source = tmp_path / "Train_GCC-training.tsv"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "wds"
    result = download(_config(out, source))

    assert result.accepted == good
    assert Counter(result.rejected) == expected
    report = [Reject.model_validate_json(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert Counter(r.reason.value for r in report) == expected  # the report has one line per reject
    assert result.shards == len(_shards(out)) == -(-len(lines) // 10)

    # per-host limits, as the servers saw them
    assert max(state.max_in_flight.values()) <= 3
    host_starts = defaultdict(list)
    for host, _, at in state.requests:
        host_starts[host].append(at)
    for starts in host_starts.values():
        assert starts[-1] - starts[0] >= 0.9 * (len(starts) - 1) / 100
    assert sum(1 for _, path, _ in state.requests if path.startswith("/robots.txt")) == 3  # once per host

    # the shards are what convert reads: every good image with its caption, by line number
    records = [i for i in read_source(SourceSpec(format="webdataset", path=str(out))) if not isinstance(i, Reject)]
    assert len(records) == good
    by_url = {line.split("\t")[1]: line.split("\t")[0] for line in lines if "\t" in line}
    for record in records:
        key = record.key.split("/")[1]
        meta = json.loads(tarfile.open(out / record.key.split("/")[0]).extractfile(f"{key}.json").read())
        assert record.caption == by_url[meta["url"]] == meta["caption"]
        assert meta["key"] == str(int(key) + 1)  # the CC3M line number
        assert Image.open(io.BytesIO(record.image_bytes)).size[0] >= 24

    from dataprep.convert import ConvertConfig, convert

    converted = convert(ConvertConfig(out=str(tmp_path / "mds"), workers=1, sources=[
        SourceSpec(format="webdataset", path=str(out), name="cc3m")]))
    assert converted.datasets["train"].manifest.samples == good


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_mid_download_then_rerun_gives_the_same_shards_fetching_nothing_twice(hosts, tmp_path: Path) -> None:
    base, state = hosts
    lines = [line for line in _planted(base)[0] if "/slow/" not in line]  # timeouts are the other test's
    source = tmp_path / "cc3m.tsv"
    source.write_text("\n".join(lines) + "\n")
    reference = tmp_path / "reference"
    uninterrupted = download(_config(reference, source, per_host_rate=8))

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "dataprep", "download", str(out), "--source", f"format=cc3m,path={source}",
               "--concurrency", "16", "--per-host-connections", "3", "--per-host-rate", "8", "--timeout", "2",
               "--retries", "1", "--backoff", "0.05", "--chunk-size", "10"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while not (list(out.glob("*.tar")) and any(len(list(p.glob("*.json"))) >= 2 for p in out.glob("*.parts"))):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=20)
    killed_at = time.monotonic()
    stored = {int(p.name.split(".")[0]) for folder in out.glob("*.parts") for p in folder.glob("*.json")}
    finished = sorted(out.glob("*.tar"))
    assert stored and finished and len(finished) < len(_shards(reference))  # it really was cut off midway

    result = download(_config(out, source, per_host_rate=8))
    assert _shards(out) == _shards(reference)  # byte for byte
    assert (out / "rejects.jsonl").read_bytes() == (reference / "rejects.jsonl").read_bytes()
    assert not list(out.glob("*.parts"))
    urls = [line.split("\t")[1] for line in lines if "\t" in line]
    stored_paths = {urls[position].split("/", 3)[3] for position in stored}
    refetched = [path for _, path, at in state.requests if at > killed_at and path.lstrip("/") in stored_paths]
    assert refetched == []  # what the killed run had stored was not fetched again
    assert (result.accepted, result.rejected) == (uninterrupted.accepted, uninterrupted.rejected)


def test_a_folder_of_another_download_is_refused(hosts, tmp_path: Path) -> None:
    base, _ = hosts
    source = tmp_path / "a.tsv"
    source.write_text(f"one\t{base['127.0.0.1']}/img/1.jpg\n")
    download(_config(tmp_path / "out", source))
    with pytest.raises(ValueError, match="other settings"):
        download(_config(tmp_path / "out", source, chunk_size=5))
