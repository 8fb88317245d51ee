"""A small fake Kubernetes API server on loopback: it stores what is created, serves it back with a
status the test sets, records every request, and answers like the real server where the launcher looks
(201 on create, 404 Status for missing objects, pod lists and logs)."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

# /api/v1/namespaces/ns/configmaps[/name[/status|/log]] or /apis/group/version/namespaces/ns/plural[...]
_PATH = re.compile(r"^(?P<collection>/apis?/(?:[^/]+/)?[^/]+/namespaces/[^/]+/[^/]+)"
                   r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|log))?$")


def _rfc3339(t: float) -> str:
    """As the kubelet writes it (RFC3339Nano: trailing zeros of the fraction dropped)."""
    whole = datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{round((t % 1) * 1e9):09d}".rstrip("0")
    return f"{whole}{'.' + fraction if fraction else ''}Z"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any

    def option(self, name: str) -> str | None:
        """A delete option, sent as a query parameter or in a DeleteOptions body."""
        if self.body and name in self.body:
            return str(self.body[name])
        return self.query.get(name, [None])[0]


@dataclass
class FakeKubernetes:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Object path (collection/name) -> the object as created, plus any status set by the test."""
    requests: list[Request] = field(default_factory=list)
    logs: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    """Pod name -> its log lines with the time each was written."""
    log_bytes_served: int = 0
    """Bytes of pod logs answered so far (what a reader downloads)."""
    linger_on_delete: bool = False
    """Keep an object deleted with a grace period (its pods 'terminating') until a delete with grace 0."""
    answer_after: float = 0.0
    """Seconds every request waits before it is answered (a hung API server)."""

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-cluster-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return path

    def created(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.method == "POST"]

    def find(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [(path, obj) for path, obj in self.objects.items() if obj.get("kind") == kind]

    def set_conditions(self, kind: str, *conditions: dict[str, str]) -> None:
        for path, obj in self.find(kind):
            with self.lock:
                self.objects[path] = {**obj, "status": {"conditions": list(conditions)}}

    def add_pod(self, namespace: str, name: str, labels: dict[str, str], log: str) -> None:
        with self.lock:
            self.objects[f"/api/v1/namespaces/{namespace}/pods/{name}"] = {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {"containers": [{"name": "trainer", "image": "x"}]}}
        self.append_log(name, log)

    def append_log(self, pod: str, text: str, age_seconds: float = 0.0) -> None:
        """Lines written `age_seconds` ago (now by default)."""
        written = time.time() - age_seconds
        with self.lock:
            self.logs.setdefault(pod, []).extend((written, line) for line in text.splitlines(keepends=True))

    def log_text(self, pod: str, query: dict[str, list[str]]) -> str:
        """The log as the kubelet serves it: sinceSeconds, tailLines and timestamps (RFC 3339, nanoseconds)."""
        lines = self.logs[pod]
        if "sinceSeconds" in query:
            lines = [(t, line) for t, line in lines if t >= time.time() - int(query["sinceSeconds"][0])]
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"][0]):]
        stamped = query.get("timestamps") == ["true"]
        return "".join(f"{_rfc3339(t)} {line}" if stamped else line for t, line in lines)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                                   "message": message, "code": code})

            def _handle(self) -> None:
                time.sleep(fake.answer_after)
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append(Request(self.command, url.path, parse_qs(url.query), body))
                match = _PATH.match(url.path)
                if match is None:
                    self._status(404, "NotFound", f"no route {url.path}")
                    return
                collection, name, sub = match["collection"], match["name"], match["sub"]
                with fake.lock:
                    getattr(self, f"_{self.command.lower()}")(collection, name, sub, body, parse_qs(url.query))

            def _post(self, collection: str, name: str | None, sub: str | None, body: Any, query: Any) -> None:
                path = f"{collection}/{body['metadata']['name']}"
                if path in fake.objects:
                    self._status(409, "AlreadyExists", f"{path} already exists")
                    return
                fake.objects[path] = body
                self._reply(201, body)

            def _get(self, collection: str, name: str | None, sub: str | None, body: Any, query: Any) -> None:
                if name is None:  # a list, filtered by one label selector key=value
                    wanted = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",") if kv)
                    items = [obj for path, obj in fake.objects.items() if path.startswith(collection + "/")
                             and wanted.items() <= obj["metadata"].get("labels", {}).items()]
                    self._reply(200, {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items})
                elif sub == "log":
                    if name in fake.logs:
                        text = fake.log_text(name, query)
                        fake.log_bytes_served += len(text.encode())
                        self._reply(200, text, "text/plain")
                    else:
                        self._status(404, "NotFound", f"pod {name} not found")
                elif f"{collection}/{name}" in fake.objects:
                    self._reply(200, fake.objects[f"{collection}/{name}"])
                else:
                    self._status(404, "NotFound", f"{collection}/{name} not found")

            def _delete(self, collection: str, name: str | None, sub: str | None, body: Any, query: Any) -> None:
                if name is None:  # deletecollection
                    self._reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                    return
                path = f"{collection}/{name}"
                if path not in fake.objects:
                    self._status(404, "NotFound", f"{path} not found")
                    return
                options = {**{k: v[0] for k, v in query.items()}, **(body or {})}  # query or DeleteOptions body
                grace = options.get("gracePeriodSeconds")
                if fake.linger_on_delete and str(grace) != "0":
                    fake.objects[path]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
                else:
                    del fake.objects[path]
                self._reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *_: object) -> None:
                pass

        return Handler
