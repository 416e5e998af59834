"""Store-wide scans on Dask (issue 12): a real LocalCluster with 2 worker processes gives the same results as
`--jobs 1`, and loses or doubles nothing when a worker is killed mid-run. Skipped without the .[dask] extra."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT
from scanner.batch import scan_batch
from scanner.findings import FileReport
from scanner.rules import Policy

pytestmark = pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs the .[dask] extra")

STORE = [FIXTURES / "hostile" / "pickle", FIXTURES / "hostile" / "containers", FIXTURES / "benign" / "torch",
         FIXTURES / "benign" / "safetensors", FIXTURES / "hostile" / "gguf"]


def key(fr: FileReport) -> str:
    return json.dumps(fr.to_dict(), sort_keys=True)


@pytest.fixture(scope="module")
def serial(ruleset) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(key(fr) for fr in scan_batch(STORE, Policy(), ruleset, jobs=1, digest=True).files)


@pytest.fixture
def client() -> Iterator[object]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=50)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_local_cluster_gives_the_same_results_as_jobs_1(client, serial, ruleset) -> None:  # type: ignore[no-untyped-def]
    landed: list[str] = []
    report = scan_batch(STORE, Policy(), ruleset, cluster=client, digest=True, on_file=lambda fr: landed.append(fr.path))
    assert sorted(key(fr) for fr in report.files) == serial
    assert len(landed) == len(set(landed)) == len(serial)
    # both workers took part
    assert all(n > 0 for n in client.run(lambda: len(__import__("scanner.cluster").cluster._TOKENS)).values())


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(client, serial, ruleset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(Path(__file__).parent))
    from dask_plugins import KillOnce

    marker = tmp_path / "killed"
    client.register_plugin(KillOnce(str(marker), after=3))
    landed: list[str] = []
    report = scan_batch(STORE, Policy(), ruleset, cluster=client, digest=True, on_file=lambda fr: landed.append(fr.path))
    assert marker.exists(), "no worker was killed: the test did not test anything"
    assert sorted(key(fr) for fr in report.files) == serial
    assert not [p for p, n in Counter(landed).items() if n > 1]
    assert len(landed) == len(serial)


def test_cli_cluster_local_streams_the_same_jsonl_as_jobs_1(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    paths = [str(FIXTURES / "hostile" / "pickle"), str(FIXTURES / "benign" / "torch")]

    def run(*extra: str) -> tuple[int, list[str]]:
        r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", *paths, "-f", "jsonl", *extra],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        lines = r.stdout.splitlines()
        assert json.loads(lines[-1])["type"] == "summary", r.stderr
        return r.returncode, sorted(ln for ln in lines if json.loads(ln)["type"] == "file")

    rc1, one = run("-j", "1")
    rc2, dask = run("--cluster", "local:2")
    assert rc1 == rc2 == 1
    assert dask == one and len(one) > 100


def test_progress_reports_files_bytes_per_second_and_eta() -> None:
    import io

    from scanner.batch import Progress

    out = io.StringIO()
    p = Progress(out, enabled=True)
    p.start(2)  # the last file is always drawn (redraws are throttled in between)
    p.advance("a.pt", 3_000_000)
    p.advance("b.pt", 3_000_000)
    p.finish()
    text = out.getvalue()
    last = [seg for seg in text.split("\r") if seg.strip()][-1]
    assert "2/2" in last and "files/s" in last and "ETA 0m00s" in last
    assert re.search(r" [\d.]+ files/s \d+ [KMGT]?B/s ", last), last
    assert p.bytes == 6_000_000 and p.done == 2


def test_cluster_workers_read_the_shared_signed_cache(client, ruleset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import shutil
    import sqlite3

    from scanner.batch import CACHE_DB, ResultCache, open_cache

    store = tmp_path / "store"
    shutil.copytree(FIXTURES / "hostile" / "pickle", store)
    spec = open_cache(tmp_path / "cache", ruleset, Policy(), b"k" * 32)
    first = scan_batch([store], Policy(), ruleset, cluster=client, cache=spec)
    db = sqlite3.connect(tmp_path / "cache" / CACHE_DB)
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == len(first.files)  # written by the client
    db.close()
    victim = next(fr for fr in first.files if fr.verdict.value == "malicious")
    data = Path(victim.path).read_bytes()
    # an entry signed with the run's key saying "no findings": only a worker reading the cache can report it
    ResultCache(spec).put(hashlib.sha256(data).hexdigest(), Path(victim.path).name, len(data), victim.format, ())
    second = {fr.path: fr for fr in scan_batch([store], Policy(), ruleset, cluster=client, cache=spec).files}
    assert second[victim.path].findings == ()
    assert {p: fr.findings for p, fr in second.items() if p != victim.path} == {
        fr.path: fr.findings for fr in first.files if fr.path != victim.path}


def test_bad_cluster_spec_is_a_one_line_error() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", str(FIXTURES / "benign" / "torch"),
                        "--cluster", "local:zero"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "--cluster local:N" in r.stderr and "Traceback" not in r.stderr
