"""A minimal Hugging Face Hub for tests (HF_ENDPOINT=...): the repo-info, tree and resolve endpoints that
huggingface_hub's HfFileSystem calls, serving the folders under `root` as `org/name` repositories, with
Range support on resolve and a log of every request."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class Hub(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _json(self, obj: object, code: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        u = urlparse(self.path)
        path = unquote(u.path)
        self.server.log.append((self.command, path, self.headers.get("range")))  # type: ignore[attr-defined]
        root: Path = self.server.root  # type: ignore[attr-defined]
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            base = root / m.group(1)
            files = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
            return self._json({"id": m.group(1), "sha": SHA, "private": False,
                               "siblings": [{"rfilename": f} for f in files]})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if m:
            return self._json(self._tree(root / m.group(1), (m.group(3) or "").strip("/"),
                                         "recursive=true" in (u.query or "").lower()))
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve(root / m.group(1) / m.group(3))
        return self._json({"error": f"unknown {path}"}, 404)

    def _tree(self, base: Path, sub: str, recursive: bool) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        dirs: set[str] = set()
        for p in sorted(base.rglob("*")):
            if not p.is_file():
                continue
            rel = str(p.relative_to(base))
            if sub and not rel.startswith(sub + "/"):
                continue
            rest = rel[len(sub) + 1:] if sub else rel
            parts = rest.split("/")[:-1]
            for i in range(len(parts) if recursive else min(1, len(parts))):
                d = "/".join(([sub] if sub else []) + parts[:i + 1])
                if d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": SHA, "size": 0, "path": d})
            if parts and not recursive:
                continue
            out.append({"type": "file", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": p.stat().st_size,
                        "path": rel})
        return out

    def _resolve(self, f: Path) -> None:
        if not f.is_file():
            return self._json({"error": "not found"}, 404)
        size = f.stat().st_size
        a, b, code = 0, size - 1, 200
        rng = self.headers.get("range")
        if rng:
            mm = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if mm is None:
                return self._json({"error": "bad range"}, 416)
            a, code = int(mm.group(1)), 206
            b = min(int(mm.group(2)) if mm.group(2) else size - 1, size - 1)
        with open(f, "rb") as fh:
            fh.seek(a)
            body = fh.read(max(0, b - a + 1))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"' + hashlib.sha1(f.name.encode()).hexdigest() + '"')
        self.send_header("X-Repo-Commit", SHA)
        if code == 206:
            self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return None


def serve(root: Path) -> http.server.ThreadingHTTPServer:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    srv.root = Path(root)  # type: ignore[attr-defined]
    srv.log = []  # type: ignore[attr-defined]
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
