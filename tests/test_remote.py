"""Remote stores (issue 12): URLs read by range through fsspec, against servers the tests start themselves —
an HTTP server with Range support written here, and moto's S3 server in a subprocess used through s3fs.
Each test skips when its optional extra is not installed."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT
from scanner.remote import parse_storage_options, url_from_arg

# fixture folders without symlinks (a web server or an object store has none) and without ONNX external data
# (checked against the model's folder on disk only; remote models report it unverifiable, see docs/scale.md)
SUBSET = ["hostile/pickle", "hostile/containers", "hostile/gguf", "hostile/safetensors", "hostile/keras",
          "hostile/redteam", "hostile/sidecar", "benign/torch", "benign/safetensors", "benign/joblib",
          "benign/containers", "benign/realworld_keras"]


def _have(*mods: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in mods)


needs_http = pytest.mark.skipif(not _have("fsspec", "aiohttp"), reason="needs the .[http] extra")
needs_s3 = pytest.mark.skipif(not _have("fsspec", "s3fs", "moto", "boto3"), reason="needs .[s3] and moto[server]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def modelseal(*args: str, extra_env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scanner.cli", "scan", *args], capture_output=True, text=True,
                          env={**env(), **(extra_env or {})}, cwd=ROOT, timeout=timeout)


def jsonl_files(text: str, prefix: str) -> dict[str, dict]:
    out = {}
    for line in text.splitlines():
        obj = json.loads(line)
        if obj["type"] == "file":
            assert obj["path"].startswith(prefix), obj["path"]
            rel = obj["path"][len(prefix):].lstrip("/")
            assert rel not in out, f"{rel} reported twice"
            out[rel] = obj
    return out


def comparable(obj: dict) -> tuple:
    findings = sorted((f["rule_id"], f["severity"], f["message"], json.dumps(f["location"], sort_keys=True),
                       f["evidence"] or "") for f in obj["findings"])
    return obj["format"], obj["verdict"], obj["error"], obj["size"], findings


def local_results(tmp_root: Path) -> dict[str, dict]:
    r = modelseal(str(tmp_root), "-f", "jsonl", "-j", "2")
    assert r.returncode in (0, 1), r.stderr
    return jsonl_files(r.stdout, str(tmp_root))


def copy_subset(dest: Path) -> Path:
    for sub in SUBSET:
        shutil.copytree(FIXTURES / sub, dest / sub, symlinks=True)
    return dest


# -- no network: argument parsing and the local-scan import guarantee -------------------------------------------

def test_url_arguments_survive_pathlib_and_local_paths_stay_local(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert url_from_arg(Path("s3://bucket/models/x.pt")) == "s3://bucket/models/x.pt"
    assert url_from_arg("https://host:8443/a/model.onnx") == "https://host:8443/a/model.onnx"
    assert url_from_arg(Path("hf://org/model@main")) == "hf://org/model@main"
    # pathlib drops the trailing '/' that makes an HTTP URL an index: the argument as typed wins
    monkeypatch.setattr(sys, "argv", ["modelseal", "scan", "https://h/models/"])
    assert url_from_arg(Path("https://h/models/")) == "https://h/models/"
    assert url_from_arg(Path("models/x.pt")) is None
    assert url_from_arg("ftp://host/x") is None  # not a supported scheme: a (missing) local path
    local = tmp_path / "s3:" / "bucket"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert url_from_arg(Path("s3:/bucket")) is None  # an existing local folder wins over the URL reading


def test_storage_options_parse_json_values_and_reject_bad_items() -> None:
    assert parse_storage_options(["endpoint_url=http://h:9000", "anon=true", "n=3"]) == {
        "endpoint_url": "http://h:9000", "anon": True, "n": 3}
    with pytest.raises(ValueError):
        parse_storage_options(["novalue"])


def test_local_scan_imports_no_remote_or_cluster_library(tmp_path: Path) -> None:
    code = ("import sys\nfrom scanner.cli import main\n"
            f"sys.argv = ['modelseal', 'scan', '-j', '2', '-f', 'json', '-o', {str(tmp_path / 'r.json')!r}, "
            f"{str(FIXTURES / 'hostile' / 'pickle')!r}, {str(FIXTURES / 'benign' / 'torch')!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "mods = ('fsspec', 's3fs', 'gcsfs', 'aiohttp', 'botocore', 'aiobotocore', 'dask', 'distributed', "
            "'huggingface_hub')\n"
            "print([m for m in mods if m in sys.modules])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["files"] > 100


def test_missing_extra_is_a_one_line_error(tmp_path: Path) -> None:
    # a scheme whose filesystem package is surely absent here is reported, not a traceback
    if _have("gcsfs"):
        pytest.skip("gcsfs is installed")
    r = modelseal("gs://bucket/x.pt")
    assert r.returncode == 2
    assert "modelseal[gcs]" in r.stderr and "Traceback" not in r.stderr


# -- RemoteSource over a real fsspec filesystem ----------------------------------------------------------------

@pytest.mark.skipif(not _have("fsspec"), reason="needs fsspec")
def test_remote_source_returns_the_files_bytes_and_coalesces_requests(tmp_path: Path) -> None:
    import fsspec

    from scanner.remote import FIRST_READ, MIN_AHEAD, TAIL_READ, RemoteSource

    data = os.urandom(6 << 20)
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    fs = fsspec.filesystem("file")
    src = RemoteSource(fs, str(p), len(data), str(p))
    assert src.read_at(0, 8) == data[:8]
    # the head and the tail in one round trip
    assert src.transfer.requests == 2 and src.transfer.bytes_fetched == FIRST_READ + TAIL_READ
    assert src.transfer.round_trips == 1
    assert src.read_at(1000, 5000) == data[1000:6000]  # inside the first read: free
    assert src.read_at(len(data) - 22, 22) == data[-22:]
    assert src.transfer.requests == 2
    far = 4 << 20
    assert src.read_at(far + 10, 30) == data[far + 10:far + 40]  # isolated: one small request
    assert src.read_at(far + 40, 18) == data[far + 40:far + 58]
    assert src.read_at(far, 10) == data[far:far + 10]  # just before it: same page, already fetched
    assert src.transfer.requests == 3 and src.transfer.bytes_fetched == FIRST_READ + TAIL_READ + MIN_AHEAD + 10
    # a parser walking forward: read-ahead doubles, so 64 reads of 16 KiB cost far fewer than 64 requests
    pos, before = 2 << 20, src.transfer.requests
    for _ in range(64):
        assert src.read_at(pos, 16384) == data[pos:pos + 16384]
        pos += 16384
    assert src.transfer.requests - before <= 8
    # a zip's local headers, announced together: fetched concurrently, then read without further requests
    before = src.transfer.requests
    heads = [(5 << 20) + 4000, (5 << 20) + 300_000, (5 << 20) + 700_000]
    src.prefetch([(o, 48) for o in heads])
    assert src.transfer.requests == before + 3
    for o in heads:
        assert src.read_at(o, 30) == data[o:o + 30] and src.read_at(o - 16, 16) == data[o - 16:o]
    assert src.transfer.requests == before + 3
    assert src.read_at(len(data) - 22, 100) == data[-22:]  # clipped at the end
    assert src.read_at(len(data), 1) == b""
    src.close()


# -- an HTTP server with Range support --------------------------------------------------------------------------

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with `Range` requests: one range (206) or several (206 multipart/byteranges, as nginx and
    Apache answer). Counts requests and payload bytes per path. With the server's `ignore_range` set it answers
    every GET with the whole file (200), as some servers do; with `multi_range` off it answers a multi-range
    request with the whole file (200), as S3 does (counted in `refused`, the client hangs up unread)."""

    def log_message(self, *args: object) -> None:
        pass

    def _count(self, n: int) -> None:
        if self.command == "GET":
            self.server.stats[self.path] += 1  # type: ignore[attr-defined]
            self.server.sent[self.path] += n  # type: ignore[attr-defined]

    def _write(self, body: bytes) -> None:
        if self.command == "GET":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def send_head(self):  # type: ignore[no-untyped-def]
        path = self.translate_path(self.path)
        rng = self.headers.get("Range")
        if getattr(self.server, "ignore_range", False):
            rng = None
        if rng is None or os.path.isdir(path):
            if not os.path.isdir(path):
                self._count(os.path.getsize(path) if os.path.exists(path) else 0)
            return super().send_head()
        m = re.fullmatch(r"bytes=(\d+-\d*(?:,\s*\d+-\d*)*)", rng.strip())
        if m is None or not os.path.isfile(path):
            self.send_error(416)
            return None
        size = os.path.getsize(path)
        spans = []
        for item in m.group(1).split(","):
            a_s, b_s = item.strip().split("-")
            spans.append((int(a_s), min(int(b_s) if b_s else size - 1, size - 1)))
        mode = getattr(self.server, "multi_range", True)
        if len(spans) > 1 and not mode:
            self.server.stats[self.path] += 1  # type: ignore[attr-defined]
            self.server.refused[self.path] += 1  # type: ignore[attr-defined]
            return super().send_head()
        coalesced = len(spans) > 1 and mode == "coalesce"
        if coalesced:  # RFC 9110 lets a server merge ranges: here into one huge one
            self.server.stats[self.path] += 1  # type: ignore[attr-defined]
            self.server.refused[self.path] += 1  # type: ignore[attr-defined]
            spans = [(min(a for a, _ in spans), max(b for _, b in spans))]
        with open(path, "rb") as fh:
            parts = []
            for a, b in spans:
                fh.seek(a)
                parts.append((a, b, fh.read(max(0, b - a + 1))))
        self.send_response(206)
        if len(parts) == 1:
            a, b, body = parts[0]
            self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
        else:
            bnd = "modelsealtestboundary"
            body = b"".join(f"\r\n--{bnd}\r\nContent-Type: application/octet-stream\r\n"
                            f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n".encode() + d for a, b, d in parts)
            body += f"\r\n--{bnd}--\r\n".encode()
            self.send_header("Content-Type", f"multipart/byteranges; boundary={bnd}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not coalesced:
            self._count(sum(len(d) for _, _, d in parts))
        self._write(body)
        return None


class HttpStore:
    def __init__(self, root: Path) -> None:
        handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.stats = Counter()  # type: ignore[attr-defined]
        self.server.sent = Counter()  # type: ignore[attr-defined]
        self.server.refused = Counter()  # type: ignore[attr-defined]
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None  # type: ignore[method-assign]  # clients hang up after the headers
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_store(tmp_path: Path) -> Iterator[tuple[HttpStore, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    store = HttpStore(root)
    try:
        yield store, root
    finally:
        store.close()


@needs_http
def test_http_scan_gives_the_same_findings_as_a_local_scan(http_store: tuple[HttpStore, Path]) -> None:
    store, root = http_store
    copy_subset(root)
    local = local_results(root)
    r = modelseal(store.url + "/", "-f", "jsonl", "-j", "2")
    assert r.returncode in (0, 1), r.stderr
    remote = jsonl_files(r.stdout, store.url)
    assert set(remote) == set(local) and len(local) > 300
    diffs = [k for k in local if comparable(local[k]) != comparable(remote[k])]
    assert diffs == []
    assert {o["verdict"] for o in remote.values()} >= {"malicious", "clean"}
    # what the client counted is what the server served, file by file
    for rel, obj in remote.items():
        t = obj["transfer"]
        assert t["requests"] == store.server.stats["/" + rel], rel  # type: ignore[attr-defined]
        assert t["bytes_fetched"] == store.server.sent["/" + rel], rel  # type: ignore[attr-defined]
    assert "transfer" not in next(iter(local.values()))


def sparse_safetensors(path: Path, size: int) -> None:
    """A safetensors file of `size` bytes: header as the format defines it, tensor bytes a sparse hole."""
    n = (size - 4096) // 4
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "model.weight": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(8 + len(header) + n * 4)


@needs_http
def test_http_2gb_safetensors_costs_under_one_percent_and_few_requests(http_store: tuple[HttpStore, Path]) -> None:
    store, root = http_store
    big = root / "big" / "model.safetensors"
    big.parent.mkdir()
    sparse_safetensors(big, 2 << 30)
    shutil.copy(FIXTURES / "hostile" / "pickle" / sorted(os.listdir(FIXTURES / "hostile" / "pickle"))[0],
                big.parent / "evil.bin")
    local = local_results(big.parent)
    r = modelseal(store.url + "/big/", "-f", "jsonl", "-j", "1")  # an index URL ends with '/'
    assert r.returncode in (0, 1), r.stderr
    remote = jsonl_files(r.stdout, store.url + "/big/")
    assert {k: comparable(v) for k, v in remote.items()} == {k: comparable(v) for k, v in local.items()}
    obj = remote["model.safetensors"]
    assert obj["format"] == "safetensors" and obj["verdict"] == "clean" and obj["sha256"] is None
    assert obj["transfer"]["bytes_fetched"] < obj["size"] / 100
    # the head, the tail, and the HDF5 signature probes H5FD_locate_signature would try (every power of two
    # past the first read-ahead: a polyglot check no reading of the safetensors structure can replace) in one
    # multi-range request
    assert obj["transfer"]["requests"] <= 4 and obj["transfer"]["round_trips"] <= 4
    # the server saw exactly the ranged requests the report counts (no whole-body GET to list or size it)
    assert store.server.stats["/big/model.safetensors"] == obj["transfer"]["requests"]  # type: ignore[attr-defined]
    assert store.server.sent["/big/model.safetensors"] == obj["transfer"]["bytes_fetched"]  # type: ignore[attr-defined]
    assert remote["evil.bin"]["verdict"] == "malicious"
    # --digest streams the file once: the same sha256 as the bytes on disk
    r = modelseal(store.url + "/big/evil.bin", "-f", "json", "--digest")
    (evil,) = json.loads(r.stdout)["files"]
    assert evil["sha256"] == hashlib.sha256((big.parent / "evil.bin").read_bytes()).hexdigest()
    assert evil["transfer"]["bytes_fetched"] >= evil["size"]


@needs_http
def test_a_server_ignoring_range_costs_no_whole_download_and_never_passes(http_store: tuple[HttpStore, Path]) -> None:
    store, root = http_store
    sparse_safetensors(root / "model.safetensors", 2 << 30)
    shutil.copy(FIXTURES / "benign" / "torch" / "state_dict.pt", root / "state_dict.pt")
    store.server.ignore_range = True  # type: ignore[attr-defined]
    r = modelseal(store.url + "/model.safetensors", store.url + "/state_dict.pt", "-f", "json")
    files = {Path(o["path"]).name: o for o in json.loads(r.stdout)["files"]}
    big = files["model.safetensors"]
    assert big["transfer"]["bytes_fetched"] < 8 << 20  # the first 1 MiB is cut from the stream, no more
    assert big["verdict"] != "clean" and r.returncode != 0  # the tail cannot be read: never passed as clean
    assert files["state_dict.pt"]["verdict"] == "clean"  # a small file is read whole from its start


# -- S3: moto's server in a subprocess, used through s3fs like real S3 --------------------------------------------

@pytest.fixture
def s3_server() -> Iterator[dict[str, str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto server did not start")
                time.sleep(0.2)
        yield {"endpoint": endpoint, **creds}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def s3fs_for(server: dict[str, str]):  # type: ignore[no-untyped-def]
    import s3fs

    return s3fs.S3FileSystem(key=server["AWS_ACCESS_KEY_ID"], secret=server["AWS_SECRET_ACCESS_KEY"],
                             endpoint_url=server["endpoint"], skip_instance_cache=True)


@needs_s3
def test_s3_scan_gives_the_same_findings_as_a_local_scan(s3_server: dict[str, str], tmp_path: Path) -> None:
    root = copy_subset(tmp_path / "store")
    fs = s3fs_for(s3_server)
    fs.mkdir("models")
    fs.put(str(root) + "/", "models/store", recursive=True)
    creds = {k: v for k, v in s3_server.items() if k.startswith("AWS_")}
    local = local_results(root)
    r = modelseal("s3://models/store", "--storage-option", f"endpoint_url={s3_server['endpoint']}",
                  "-f", "jsonl", "-j", "2", extra_env=creds)
    assert r.returncode in (0, 1), r.stderr
    remote = jsonl_files(r.stdout, "s3://models/store")
    assert set(remote) == set(local)
    assert [k for k in local if comparable(local[k]) != comparable(remote[k])] == []
    assert all(o["transfer"]["requests"] >= 1 for o in remote.values() if o["size"])


@needs_s3
def test_s3_large_safetensors_costs_under_one_percent(s3_server: dict[str, str], tmp_path: Path) -> None:
    big = tmp_path / "model.safetensors"
    sparse_safetensors(big, 256 << 20)
    fs = s3fs_for(s3_server)
    fs.mkdir("big")
    fs.put(str(big), "big/model.safetensors")
    creds = {k: v for k, v in s3_server.items() if k.startswith("AWS_")}
    r = modelseal("s3://big/model.safetensors", "--storage-option", f"endpoint_url={s3_server['endpoint']}",
                  "-f", "json", extra_env=creds)
    assert r.returncode == 0, r.stderr
    (obj,) = json.loads(r.stdout)["files"]
    assert obj["format"] == "safetensors" and obj["verdict"] == "clean"
    assert obj["transfer"]["bytes_fetched"] < obj["size"] / 100
    assert obj["transfer"]["requests"] <= 10


# -- hf:// through huggingface_hub's HfFileSystem, against a minimal Hub on HF_ENDPOINT ------------------------

@pytest.mark.skipif(not _have("fsspec", "huggingface_hub"), reason="needs the .[hf] extra")
def test_hf_repo_scan_gives_the_same_findings_as_a_local_scan(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_hub import serve

    repo = tmp_path / "hub" / "org" / "model"
    for sub in ("hostile/pickle", "benign/torch", "hostile/containers"):
        shutil.copytree(FIXTURES / sub, repo / sub)
    hub = serve(tmp_path / "hub")
    try:
        local = local_results(repo)
        r = modelseal("hf://org/model@main", "-f", "jsonl", "-j", "2",
                      extra_env={"HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}", "HF_TOKEN": "",
                                 "HF_HUB_DISABLE_TELEMETRY": "1"})
        assert r.returncode == 1, r.stderr
        remote = jsonl_files(r.stdout, "hf://org/model@main")
        assert set(remote) == set(local) and len(local) > 150
        assert [k for k in local if comparable(local[k]) != comparable(remote[k])] == []
        # file bytes only ever came by range, as many requests as the report counts
        gets = [(p, rng) for m, p, rng in hub.log if "/resolve/" in p]  # type: ignore[attr-defined]
        assert gets and all(rng for _, rng in gets)
        assert len(gets) == sum(o["transfer"]["requests"] for o in remote.values())
    finally:
        hub.shutdown()
        hub.server_close()



ORACLE = Path(os.environ.get("MODELSEAL_ORACLE_PYTHON", "/work/oracle/bin/python"))


@needs_http
@pytest.mark.skipif(not ORACLE.exists(), reason="needs a python with torch to write the checkpoint")
@pytest.mark.parametrize("multi", [True, False, "coalesce"])
def test_http_torch_zip_members_cost_one_round_trip_and_multi_range_one_request(
        http_store: tuple[HttpStore, Path], multi: bool | str) -> None:
    store, root = http_store
    # 48 tensors of 300 KB: every member's local header and first bytes is a region of its own
    subprocess.run([str(ORACLE), "-c", "import sys, torch; torch.save({f'w{i}': torch.zeros(75_000) "
                    "for i in range(48)}, sys.argv[1])", str(root / "model.pt")], check=True, timeout=300)
    store.server.multi_range = multi  # type: ignore[attr-defined]
    local = local_results(root)
    r = modelseal(store.url + "/model.pt", "-f", "json")
    (obj,) = json.loads(r.stdout)["files"]
    assert comparable(obj) == comparable(local["model.pt"]) and obj["format"] == "zip"
    t = obj["transfer"]
    # the head, the tail, then every member's local header and first bytes in one round
    assert t["round_trips"] <= 4
    if multi is True:
        assert t["requests"] <= 4
    else:  # refused once (a whole-file reply, or one range far larger than asked, is dropped unread), then one
        # concurrent request per member
        assert 40 <= t["requests"] <= 52 and store.server.refused["/model.pt"] == 1  # type: ignore[attr-defined]
    assert t["requests"] == store.server.stats["/model.pt"]  # type: ignore[attr-defined]
    assert t["bytes_fetched"] == store.server.sent["/model.pt"] < obj["size"] / 5  # type: ignore[attr-defined]


# -- attest and --digest/--cache: the file streamed once, scanned from the same bytes ------------------------------

def attest_cli(target: str, out: Path, *extra: str, extra_env: dict[str, str] | None = None) -> dict:
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "attest", target, "--unsigned", "-o", str(out), *extra],
                       capture_output=True, text=True, env={**env(), **(extra_env or {})}, cwd=ROOT, timeout=600)
    assert r.returncode in (0, 1), r.stderr
    st = json.loads(out.read_text())
    for k in ("scanStartedOn", "scanFinishedOn"):
        st["predicate"].pop(k)
    return st


@needs_http
def test_http_attest_streams_each_file_once_and_matches_a_local_attest(http_store: tuple[HttpStore, Path],
                                                                      tmp_path: Path) -> None:
    store, root = http_store
    model = root / "model"
    for sub in ("hostile/pickle", "benign/torch"):
        shutil.copytree(FIXTURES / sub, model / sub)
    (model / ".gitattributes").write_text("*.bin filter=lfs\n")  # ignored at the top, as locally
    local = attest_cli(str(model), tmp_path / "local.json")
    remote = attest_cli(store.url + "/model/", tmp_path / "remote.json")
    assert remote == local and remote["predicate"]["verdict"] == "malicious"
    assert len(remote["subject"]) > 20 and ".gitattributes" not in {s["name"] for s in remote["subject"]}
    # every attested file came over the wire exactly once, whole, and nothing else was read
    files = [p for p in model.rglob("*") if p.is_file() and p.name != ".gitattributes"]
    for p in files:
        rel = "/model/" + p.relative_to(model).as_posix()
        assert store.server.sent[rel] == p.stat().st_size, rel  # type: ignore[attr-defined]
        assert store.server.stats[rel] == max(1, -(-p.stat().st_size // (8 << 20))), rel  # type: ignore[attr-defined]
    assert "/model/.gitattributes" not in store.server.sent  # type: ignore[attr-defined]


@needs_s3
def test_s3_attest_of_one_file_matches_a_local_attest(s3_server: dict[str, str], tmp_path: Path) -> None:
    evil = FIXTURES / "hostile" / "pickle" / sorted(os.listdir(FIXTURES / "hostile" / "pickle"))[0]
    fs = s3fs_for(s3_server)
    fs.mkdir("att")
    fs.put(str(evil), f"att/{evil.name}")
    creds = {k: v for k, v in s3_server.items() if k.startswith("AWS_")}
    remote = attest_cli(f"s3://att/{evil.name}", tmp_path / "remote.json", "--storage-option",
                        f"endpoint_url={s3_server['endpoint']}", extra_env=creds)
    assert remote == attest_cli(str(evil), tmp_path / "local.json")
    assert remote["subject"] == [{"name": evil.name, "digest": {"sha256": hashlib.sha256(evil.read_bytes()).hexdigest()}}]


@needs_http
def test_remote_digest_uses_the_signed_cache_keyed_on_the_bytes_scanned(http_store: tuple[HttpStore, Path],
                                                                       tmp_path: Path, ruleset,  # type: ignore[no-untyped-def]
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from scanner import engine
    from scanner.batch import open_cache, scan_batch
    from scanner.rules import Policy

    store, root = http_store
    shutil.copytree(FIXTURES / "hostile" / "pickle", root / "p")
    monkeypatch.setenv("MODELSEAL_CACHE_KEY", "test-secret")
    spec = open_cache(tmp_path / "cache", ruleset, Policy())
    first = scan_batch([store.url + "/p/"], Policy(), ruleset, jobs=1, cache=spec, digest=True)
    assert all(fr.sha256 == hashlib.sha256((root / "p" / Path(fr.path).name).read_bytes()).hexdigest()
               for fr in first.files)
    # the second run finds every result in the cache: no analyzer runs (each file is still streamed once)
    monkeypatch.setattr(engine, "scan_source", lambda *a, **k: pytest.fail("scanned despite a cache hit"))
    second = scan_batch([store.url + "/p/"], Policy(), ruleset, jobs=1, cache=spec, digest=True)
    key = lambda r: sorted((fr.path, fr.sha256, fr.format, fr.findings) for fr in r.files)  # noqa: E731
    assert key(second) == key(first) and any(fr.verdict.value == "malicious" for fr in second.files)
    # a cache signed with another key is not trusted: everything is scanned again
    monkeypatch.setenv("MODELSEAL_CACHE_KEY", "other-secret")
    with pytest.raises(pytest.fail.Exception):
        scan_batch([store.url + "/p/"], Policy(), ruleset, jobs=1, cache=open_cache(tmp_path / "cache", ruleset,
                                                                                   Policy()), digest=True)
    # without --digest a remote file is read by range and the cache is not consulted
    monkeypatch.undo()
    ranged = scan_batch([store.url + "/p/"], Policy(), ruleset, jobs=1, cache=spec, digest=False)
    assert all(fr.sha256 is None for fr in ranged.files)


def test_multipart_replies_are_split_by_their_content_ranges_not_by_boundary_search() -> None:
    from scanner.remote_http import _split_multipart

    b = b"BND"
    data1 = b"\r\n--BND\r\nlooks like a part" * 3  # the boundary inside a part's bytes
    data2 = bytes(range(256))
    body = (b"\r\n--BND\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 100-"
            + str(99 + len(data1)).encode() + b"/9999\r\n\r\n" + data1
            + b"\r\n--BND\r\nContent-Range: bytes 5000-5255/9999\r\n\r\n" + data2 + b"\r\n--BND--\r\n")
    assert _split_multipart(body, b) == [(100, data1), (5000, data2)]
    # a part shorter than its Content-Range claims ends the parse: what follows is not trusted
    assert _split_multipart(body[:-300], b) == [(100, data1)]
