"""Image URL lists -> WebDataset tar shards in img2dataset's layout, every failure a reject with its reason.

    tcl-dataprep download /data/cc3m-wds --source format=cc3m,path=Train_GCC-training.tsv
    tcl-dataprep convert s3://bucket/cc3m --source format=webdataset,path=/data/cc3m-wds

Chunk i of the output holds source records i*chunk_size ... (i+1)*chunk_size-1 as shard `0000i.tar`
(members `<key>.<ext>`, `<key>.txt`, `<key>.json`, key = the record's position) plus `0000i.rejects.jsonl`.
While a chunk is fetched, each finished record is written at once to `0000i.parts/` (image or reject,
each file renamed into place), so a killed download continues where it stopped and fetches nothing
twice; a chunk's shard is written from its parts in record order with fixed tar headers, so a resumed
download gives byte for byte the shards an uninterrupted one gives.

Fetching: a thread pool of `concurrency` requests, at most `per_host_connections` at once and
`per_host_rate` starts a second per host; 429 (with its Retry-After) and 5xx answers, timeouts and
connection errors are retried with exponential back-off. The opt-out is honoured by default, with
img2dataset's semantics: an `X-Robots-Tag` directive among `disallowed_directives`, for every agent
or for `user_agent_token` (`X-Robots-Tag: tcl-dataprep: noai`); and the host's robots.txt.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
import threading
import time
import urllib.robotparser
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from itertools import islice
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from dataprep.limits import Limits
from dataprep.records import Item, Reject, RejectReason, SourceRecord
from dataprep.sources import SourceSpec, read_source
from dataprep.sources.base import SourceError

logger = logging.getLogger(__name__)

SETTINGS_NAME = "download.json"
REJECTS_NAME = "rejects.jsonl"
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
_RETRIED = {RejectReason.TIMEOUT, RejectReason.CONNECTION_ERROR, RejectReason.HTTP_SERVER_ERROR,
            RejectReason.RATE_LIMITED}


class DownloadConfig(BaseModel):
    """One download: which URL list, where to, and how politely."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out: str = Field(min_length=1)
    """Local output folder (the shards, their reject lists, download.json)."""
    source: SourceSpec
    """A source of image URLs: cc3m, sbu, parquet, or a csv/tsv/jsonl whose image column holds URLs."""
    concurrency: int = Field(32, ge=1, le=1024)
    """Requests in flight over all hosts."""
    per_host_connections: int = Field(4, ge=1)
    """Requests in flight to one host."""
    per_host_rate: float = Field(10.0, gt=0)
    """Request starts per second to one host."""
    timeout: float = Field(10.0, gt=0)
    """Seconds one request may take, from connecting to the last byte of the body."""
    retries: int = Field(2, ge=0)
    """Further tries of a request that timed out, failed to connect, or got 429 / 5xx."""
    backoff: float = Field(1.0, ge=0)
    """Seconds before the first retry; doubles with each (a 429's Retry-After, up to max_backoff, wins)."""
    max_backoff: float = Field(60.0, ge=0)
    max_bytes: int = Field(Limits().max_file_bytes, ge=1)
    """Larger images are rejected as file_too_large (a declared Content-Length is checked before reading)."""
    max_redirects: int = Field(5, ge=0)
    chunk_size: int = Field(1000, ge=1)
    """Records per shard: the unit of the output (a resume continues inside a chunk too)."""
    honour_opt_out: bool = True
    """Reject (opted_out) what X-Robots-Tag or robots.txt disallows."""
    disallowed_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    """X-Robots-Tag directives that opt an image out (img2dataset's defaults)."""
    user_agent_token: str = "tcl-dataprep"
    """Our name in User-Agent, in robots.txt groups and in agent-scoped X-Robots-Tag directives."""

    def output_settings(self) -> dict:
        """What decides the shards: a resumed download must use the same."""
        return self.model_dump(mode="json", include={"source", "chunk_size", "max_bytes", "honour_opt_out",
                                                     "disallowed_directives", "user_agent_token"})


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    extension: str


class DownloadResult(BaseModel):
    out: str
    shards: int
    accepted: int
    rejected: dict[str, int]
    """Reason -> records (the reject list of every record is in rejects.jsonl)."""


class _HostGate:
    """Per-host limits: at most `connections` requests at once, starts at least 1/rate seconds apart."""

    def __init__(self, connections: int, rate: float) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, threading.Semaphore] = defaultdict(lambda: threading.Semaphore(connections))
        self._next: dict[str, float] = {}
        self._interval = 1.0 / rate

    def enter(self, host: str) -> None:
        self._slots[host].acquire()
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self._interval
        time.sleep(start - now)

    def leave(self, host: str) -> None:
        self._slots[host].release()

    def pause(self, host: str, seconds: float) -> None:
        """No new request to host for `seconds` (it answered 429)."""
        with self._lock:
            self._next[host] = max(self._next.get(host, 0.0), time.monotonic() + seconds)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def opted_out_by_header(values: list[str], token: str, disallowed: tuple[str, ...]) -> bool:
    """img2dataset's reading of X-Robots-Tag: `[agent:] directive, directive...` per header value; a value
    without an agent applies to every agent."""
    for value in values:
        agent, sep, rest = value.partition(":")
        directives = rest if sep else agent
        if sep and agent.strip().lower() != token.lower():
            continue
        if any(d.strip().lower() in disallowed for d in directives.split(",")):
            return True
    return False


class Fetcher:
    """Fetches one URL at a time per calling thread, within the per-host limits."""

    def __init__(self, config: DownloadConfig) -> None:
        self.config = config
        self.client = httpx.Client(
            follow_redirects=True, max_redirects=config.max_redirects, timeout=config.timeout,
            # identity: the bytes stored are the image file itself, and Content-Length counts them
            headers={"User-Agent": f"Mozilla/5.0 (compatible; {config.user_agent_token}/1.0)",
                     "Accept-Encoding": "identity"},
            limits=httpx.Limits(max_connections=config.concurrency + 8),
        )
        self.gate = _HostGate(config.per_host_connections, config.per_host_rate)
        self._robots: dict[str, urllib.robotparser.RobotFileParser | str] = {}
        self._robots_lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def fetch(self, url: str) -> Fetched | tuple[RejectReason, str]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return RejectReason.BAD_URL, f"not an http(s) URL: {url!r}"
        host = parts.hostname
        if self.config.honour_opt_out:
            verdict = self._robots_verdict(parts.scheme, parts.netloc, host, url)
            if verdict is not None:
                return RejectReason.OPTED_OUT, verdict
        attempt = 0
        while True:
            self.gate.enter(host)
            try:
                outcome, retry_after = self._get(url)
            finally:
                self.gate.leave(host)
            if isinstance(outcome, Fetched) or outcome[0] not in _RETRIED or attempt == self.config.retries:
                return outcome
            delay = min(self.config.max_backoff, self.config.backoff * 2**attempt)
            if retry_after is not None:
                delay = min(self.config.max_backoff, retry_after)
                self.gate.pause(host, delay)
            time.sleep(delay)
            attempt += 1

    def _get(self, url: str) -> tuple[Fetched | tuple[RejectReason, str], float | None]:
        """One request: (the image or why not, the Retry-After of a 429/503)."""
        deadline = time.monotonic() + self.config.timeout
        try:
            with self.client.stream("GET", url) as response:
                status = response.status_code
                if status != 200:
                    return self._status_reject(status), _retry_after(response.headers.get("Retry-After"))
                if self.config.honour_opt_out and opted_out_by_header(
                        response.headers.get_list("X-Robots-Tag"), self.config.user_agent_token,
                        self.config.disallowed_directives):
                    return (RejectReason.OPTED_OUT, "X-Robots-Tag: " + ", ".join(
                        response.headers.get_list("X-Robots-Tag"))), None
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self.config.max_bytes:
                    return (RejectReason.FILE_TOO_LARGE, f"Content-Length {declared} > {self.config.max_bytes}"), None
                body = bytearray()
                for piece in response.iter_raw():
                    body += piece
                    if len(body) > self.config.max_bytes:
                        return (RejectReason.FILE_TOO_LARGE, f"body over {self.config.max_bytes} bytes"), None
                    if time.monotonic() > deadline:
                        return (RejectReason.TIMEOUT, f"body not complete after {self.config.timeout}s"), None
                if declared is not None and declared.isdigit() and len(body) < int(declared):
                    return (RejectReason.TRUNCATED_DOWNLOAD, f"{len(body)} of {declared} bytes"), None
        except httpx.TooManyRedirects as error:
            return (RejectReason.REDIRECT_LOOP, str(error)), None
        except httpx.TimeoutException as error:
            return (RejectReason.TIMEOUT, f"{type(error).__name__} after {self.config.timeout}s"), None
        except httpx.RemoteProtocolError as error:  # closed before the announced body was complete
            return (RejectReason.TRUNCATED_DOWNLOAD, str(error)), None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
            return (RejectReason.BAD_URL, str(error)), None
        except httpx.HTTPError as error:
            return (RejectReason.CONNECTION_ERROR, f"{type(error).__name__}: {error}"), None
        return _as_image(bytes(body)), None

    @staticmethod
    def _status_reject(status: int) -> tuple[RejectReason, str]:
        if status == 404:
            return RejectReason.HTTP_404, "HTTP 404"
        if status == 429:
            return RejectReason.RATE_LIMITED, "HTTP 429"
        if status >= 500:
            return RejectReason.HTTP_SERVER_ERROR, f"HTTP {status}"
        return RejectReason.HTTP_CLIENT_ERROR, f"HTTP {status}"

    def _robots_verdict(self, scheme: str, netloc: str, host: str, url: str) -> str | None:
        """Why robots.txt disallows url for us; None when it allows it (or the site has none)."""
        key = f"{scheme}://{netloc}"
        with self._robots_lock:  # one fetch per site, whichever thread asks first
            rules = self._robots.get(key)
            if rules is None:
                rules = self._robots[key] = self._load_robots(key, host)
        if isinstance(rules, str):
            return rules
        return None if rules.can_fetch(self.config.user_agent_token, url) else f"robots.txt of {key} disallows it"

    def _load_robots(self, site: str, host: str) -> urllib.robotparser.RobotFileParser | str:
        """RFC 9309: a 4xx robots.txt allows everything; 5xx means the whole site is disallowed."""
        rules = urllib.robotparser.RobotFileParser()
        self.gate.enter(host)
        try:
            response = self.client.get(f"{site}/robots.txt")
        except httpx.HTTPError:
            rules.parse([])  # unreachable: each record's own request reports why
            return rules
        finally:
            self.gate.leave(host)
        if response.status_code >= 500:
            return f"robots.txt of {site} answered HTTP {response.status_code} (RFC 9309: everything disallowed)"
        rules.parse(response.text[:500_000].splitlines() if response.status_code == 200 else [])  # RFC 9309: >= 500 KiB
        return rules


def _as_image(data: bytes) -> Fetched | tuple[RejectReason, str]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            extension = _EXTENSIONS.get(image.format or "")
    except (OSError, ValueError, Image.DecompressionBombError):
        extension = None
    if extension is None:
        start = data[:40].decode("ascii", "replace").strip()
        return RejectReason.NOT_AN_IMAGE, f"{len(data)} bytes that no image decoder reads (starting {start!r})"
    return Fetched(data, extension)


# --- the output ------------------------------------------------------------------------------------
def shard_name(chunk: int) -> str:
    return f"{chunk:05d}.tar"


class _Parts:
    """The finished records of a chunk being fetched: `<position>.<ext>` + `<position>.json` for an image,
    `<position>.reject` for a reject; each file appears whole (written aside, then renamed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def done(self) -> set[int]:
        names = [p.name for p in self.folder.iterdir() if not p.name.startswith(".")]
        return {int(n.split(".")[0]) for n in names if n.endswith((".json", ".reject"))}

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.folder / f".{name}.{threading.get_ident()}"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / name)

    def add_image(self, position: int, record: SourceRecord, fetched: Fetched) -> None:
        self._write(f"{position}.{fetched.extension}", fetched.data)
        meta = {"url": record.image_url, "caption": record.caption, "source": record.source, "key": record.key,
                "extension": fetched.extension}
        self._write(f"{position}.json", json.dumps(meta).encode())  # last: marks the record finished

    def add_reject(self, position: int, reject: Reject) -> None:
        self._write(f"{position}.reject", reject.model_dump_json().encode())

    def read(self, position: int) -> tuple[dict, bytes] | Reject:
        reject = self.folder / f"{position}.reject"
        if reject.is_file():
            return Reject.model_validate_json(reject.read_bytes())
        meta = json.loads((self.folder / f"{position}.json").read_bytes())
        return meta, (self.folder / f"{position}.{meta['extension']}").read_bytes()


def _tar_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # fixed headers: the same records give the same bytes
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    archive.addfile(info, io.BytesIO(data))


def _finish_chunk(out: Path, chunk: int, parts: _Parts, positions: range) -> tuple[int, list[Reject]]:
    """Write the chunk's shard and reject list from its parts (in record order); returns (accepted, rejects)."""
    rejects: list[Reject] = []
    accepted = 0
    tmp = out / f".{shard_name(chunk)}.tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as archive:
        for position in positions:
            entry = parts.read(position)
            if isinstance(entry, Reject):
                rejects.append(entry)
                continue
            meta, data = entry
            key = f"{position:09d}"
            caption = meta["caption"] if isinstance(meta["caption"], str) else "\n".join(meta["caption"])
            _tar_member(archive, f"{key}.{meta['extension']}", data)
            _tar_member(archive, f"{key}.txt", caption.encode())
            _tar_member(archive, f"{key}.json", json.dumps({k: meta[k] for k in ("url", "caption", "source", "key")},
                                                           sort_keys=True).encode())
            accepted += 1
    (out / f"{chunk:05d}.rejects.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rejects))
    os.replace(tmp, out / shard_name(chunk))  # the shard's presence marks the chunk finished
    shutil.rmtree(parts.folder)
    return accepted, rejects


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _open_output(config: DownloadConfig) -> Path:
    out = Path(config.out)
    settings = out / SETTINGS_NAME
    wanted = config.output_settings()
    if settings.is_file():
        if json.loads(settings.read_text()) != wanted:
            raise SourceError(f"{out} holds a download with other settings ({settings}): use another folder")
    else:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{SETTINGS_NAME}.tmp"
        tmp.write_text(json.dumps(wanted, indent=1, sort_keys=True))
        os.replace(tmp, settings)
    return out


def download(config: DownloadConfig, progress=None) -> DownloadResult:
    """Fetch every image of the source (or what a previous run left), chunk by chunk; see the module doc.
    `progress` (a tqdm bar fits) gets update(n) per record handled."""
    out = _open_output(config)
    fetcher = Fetcher(config)
    accepted, rejected, shards = 0, Counter[str](), 0
    try:
        with ThreadPoolExecutor(config.concurrency, thread_name_prefix="download") as pool:
            for chunk, items in enumerate(_chunks(read_source(config.source), config.chunk_size)):
                start = chunk * config.chunk_size
                positions = range(start, start + len(items))
                if (out / shard_name(chunk)).is_file():
                    chunk_accepted, chunk_rejects = _read_finished(out, chunk)
                    if progress is not None:
                        progress.update(len(items))
                else:
                    chunk_accepted, chunk_rejects = _fetch_chunk(out, chunk, items, positions, fetcher, pool, progress)
                accepted += chunk_accepted
                rejected.update(r.reason.value for r in chunk_rejects)
                shards += 1
    finally:
        fetcher.close()
    _write_report(out, shards)
    return DownloadResult(out=str(out), shards=shards, accepted=accepted, rejected=dict(sorted(rejected.items())))


def _fetch_chunk(out: Path, chunk: int, items: list[Item], positions: range, fetcher: Fetcher,
                 pool: ThreadPoolExecutor, progress) -> tuple[int, list[Reject]]:
    parts = _Parts(out / f"{chunk:05d}.parts")
    done = parts.done()

    def one(position: int, item: Item) -> None:
        if isinstance(item, Reject):
            parts.add_reject(position, item)
        elif item.image_url is None:
            parts.add_reject(position, item.reject(RejectReason.BAD_URL, f"not a URL: {item.image_ref!r}"))
        else:
            outcome = fetcher.fetch(item.image_url)
            if isinstance(outcome, Fetched):
                parts.add_image(position, item, outcome)
            else:
                parts.add_reject(position, item.reject(*outcome))
        if progress is not None:
            progress.update(1)

    futures = [pool.submit(one, position, item) for position, item in zip(positions, items, strict=True)
               if position not in done]
    if progress is not None:
        progress.update(len(items) - len(futures))
    for future in futures:
        future.result()
    accepted, rejects = _finish_chunk(out, chunk, parts, positions)
    logger.info("shard %s: %d images, %d rejected", shard_name(chunk), accepted, len(rejects))
    return accepted, rejects


def _read_finished(out: Path, chunk: int) -> tuple[int, list[Reject]]:
    rejects = [Reject.model_validate_json(line)
               for line in (out / f"{chunk:05d}.rejects.jsonl").read_text().splitlines() if line]
    with tarfile.open(out / shard_name(chunk)) as archive:
        accepted = sum(1 for name in archive.getnames() if name.endswith(".txt"))
    return accepted, rejects


def _write_report(out: Path, shards: int) -> None:
    """rejects.jsonl: every chunk's rejects in record order (dataprep's reject report format)."""
    tmp = out / f".{REJECTS_NAME}.tmp"
    with tmp.open("w") as report:
        for chunk in range(shards):
            report.write((out / f"{chunk:05d}.rejects.jsonl").read_text())
    os.replace(tmp, out / REJECTS_NAME)
