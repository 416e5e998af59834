"""Smoke run of the benchmark suite: a tiny corpus, modelseal alone, peers skipped when not installed.
Offline and quick; it checks the plumbing (corpus, measurement, parsing, scoring, reports), not speed."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture()
def bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("run", "bench_corpus", "bench_tools", "bench_measure"):
        sys.modules.pop(name, None)
    import bench_tools
    import run

    # no peers: point the suite at an empty peers folder so it must skip them, never install them
    monkeypatch.setattr(bench_tools, "PEERS_VENV", tmp_path / "no-peers")
    yield run
    for name in ("run", "bench_corpus", "bench_tools", "bench_measure"):
        sys.modules.pop(name, None)


def _tiny_fixtures(root: Path) -> None:
    (root / "hostile" / "pickle").mkdir(parents=True)
    (root / "benign" / "plain").mkdir(parents=True)
    payload = b"echo pwned"
    (root / "hostile" / "pickle" / "p01.pkl").write_bytes(
        b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(payload)) + payload + b"\x85R.")
    (root / "benign" / "plain" / "config.json").write_text('{"hidden_size": 8}')
    (root / "manifest-smoke.toml").write_text(
        '[[hostile]]\npath = "hostile/pickle/p01.pkl"\nthreat = "P01"\nrule = "PICKLE-DANGEROUS-CALL"\n'
        'severity = "critical"\n\n[[benign]]\npath = "benign/plain/config.json"\n')


def test_smoke_run_modelseal_only(bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixtures = tmp_path / "fixtures"
    _tiny_fixtures(fixtures)
    out = tmp_path / "out"
    code = bench.main(["--tools", "modelseal,picklescan,modelscan,modelaudit", "--groups",
                       "fixtures,small,safetensors", "--fixtures", str(fixtures), "--corpus", str(tmp_path / "corpus"),
                       "--out", str(out), "--small-count", "8", "--size-gb", "0.001", "--no-chart", "--jobs", "2"])
    assert code == 0
    log = capsys.readouterr().out
    for peer in ("picklescan", "modelscan", "modelaudit"):
        assert f"skipping {peer}: not installed" in log

    doc = json.loads((out / "results.json").read_text())
    summary = doc["summary"]
    assert list(summary) == ["modelseal"]
    s = summary["modelseal"]
    assert (s["hostile_total"], s["benign_total"]) == (1, 1 + 8 + 1)
    assert s["hostile_detected"] == 1 and s["hostile_missed"] == []
    assert s["benign_flagged"] == []
    assert set(s["per_group"]) == {"fixtures", "small-8", "safetensors-2g"}
    assert all(g["wall_s"] > 0 and g["peak_rss_mb"] > 0 for g in s["per_group"].values())

    # the sparse "large" model really has the advertised size
    st = tmp_path / "corpus" / "safetensors-2g" / "model.safetensors"
    assert st.stat().st_size >= 1 << 20

    md = (out / "results.md").read_text()
    assert "| modelseal |" in md and "| 1/1 | 0 | 0/10 |" in md
    assert "| P01 | 1 | 1/1 |" in md
    assert "| smoke | 1/1 · 0/1 |" in md  # per format family (the manifest's name)


def test_honest_sample_takes_every_producer_in_turn(bench, tmp_path: Path) -> None:
    import bench_corpus

    root = tmp_path / "honest"
    entries = []
    for prod in ("a==1", "b==2", "c==3"):
        for i in range(3):
            rel = f"pkg/{prod}/f{i}.json"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("{}")
            entries.append({"path": rel, "producer": prod})
    (root / "pkg/a==1/f0.json.data").write_text("companion")
    entries.append({"path": "pkg/a==1/f0.json.data", "producer": "a==1"})  # sorts last for its producer
    (root / "manifest.json").write_text(json.dumps({"producers": 3, "entries": entries}))
    g = bench_corpus.honest_group(root, sample=3, corpus=tmp_path / "corpus")
    assert g is not None and g.root == tmp_path / "corpus" / "honest-sample-3"
    # one per producer in turn, then f0.json's companion, or the sampled model would be broken
    assert [(x.producer, x.path.name) for x in g.labelled] == [
        ("a==1", "f0.json"), ("b==2", "f0.json"), ("c==3", "f0.json"), ("a==1", "f0.json.data")]
    assert all(x.path.exists() and x.path.is_relative_to(g.root) for x in g.labelled)
    assert len([p for p in g.root.rglob("*") if p.is_file()]) == 4
    g = bench_corpus.honest_group(root, sample=5, corpus=tmp_path / "corpus")
    # a's queue is f0.json, f0.json.data, ...: the companion is a's second pick, b's second comes next
    assert [(x.producer, x.path.name) for x in g.labelled][3:] == [("a==1", "f0.json.data"), ("b==2", "f1.json")]
    whole = bench_corpus.honest_group(root, sample=None)
    assert whole is not None and whole.root == root and len(whole.labelled) == 10


def test_parsers_map_peer_outputs_to_files(bench, tmp_path: Path) -> None:
    """Each peer's output format (as observed from the real CLIs) becomes per-file outcomes."""
    import bench_tools as t

    root = tmp_path / "c"
    evil, ok, zipped = root / "evil.pkl", root / "ok.pkl", root / "m.zip"
    files = [evil, ok, zipped]
    out = tmp_path / "o.json"

    out.write_text(json.dumps({"issues": [
        {"severity": "critical", "location": f"{evil} (pos 72)", "type": "pickle_check"},
        {"severity": "info", "location": str(ok), "type": "pickle_check"},
        {"severity": "warning", "location": f"{zipped}:archive/data.pkl", "type": "zip_check"}]}))
    ma = t.modelaudit_tool().parse("", out, root, files)
    assert ma == {evil: t.DETECTED, zipped: t.DETECTED}

    out.write_text(json.dumps({"issues": [{"source": "m.zip:archive/data.pkl", "severity": "CRITICAL"}],
                               "errors": [{"source": "ok.pkl", "description": "boom"}]}))
    ms = t.modelscan_tool().parse("", out, root, files)
    assert ms == {zipped: t.DETECTED, ok: t.ERROR}

    stdout = (f"{evil}: dangerous import 'os system' FOUND\n"
              f"ERROR: parsing pickle in {zipped}:archive/data.pkl: bad opcode\n"
              "----------- SCAN SUMMARY -----------\n")
    assert t.picklescan_tool().parse(stdout, out, root, files) == {evil: t.DETECTED, zipped: t.ERROR}


def test_measure_reports_exit_code_and_memory(bench) -> None:
    import bench_measure

    m = bench_measure.run_measured([sys.executable, "-c", "b = bytearray(40 << 20); b[::4096] = b'x' * len(b[::4096]);"
                                    "raise SystemExit(3)"])
    assert m.returncode == 3 and not m.timed_out
    assert m.peak_rss_mb >= 40


def test_families_copy_and_label_only_their_manifests(bench, tmp_path: Path) -> None:
    import bench_corpus

    fixtures = tmp_path / "fixtures"
    _tiny_fixtures(fixtures)
    (fixtures / "benign" / "other").mkdir(parents=True)
    (fixtures / "benign" / "other" / "x.json").write_text("{}")
    (fixtures / "manifest-other.toml").write_text('[[benign]]\npath = "benign/other/x.json"\n')
    g = bench_corpus.fixtures_group(tmp_path / "corpus", fixtures, families=("other",))
    assert [x.path.name for x in g.labelled] == ["x.json"] and g.labelled[0].family == "other"
    assert not (g.root / "hostile").exists() and not (g.root / "benign" / "plain").exists()
    whole = bench_corpus.fixtures_group(tmp_path / "corpus", fixtures)
    assert {x.family for x in whole.labelled} == {"smoke", "other"}
    with pytest.raises(SystemExit):
        bench_corpus.fixtures_group(tmp_path / "corpus", fixtures, families=("nope",))
