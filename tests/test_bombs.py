"""Bombs stop early: every family is stopped with a finding, and the budget counters show how little was
decompressed or listed before it stopped (no timing asserts: time and RSS are in benchmarks/bench_bombs.py)."""

from __future__ import annotations

import os
import sys
import tracemalloc
import zlib
from pathlib import Path

import pytest

from conftest import ROOT, rule_ids
from scanner import sandbox
from scanner.engine import ScanContext, scan_file, scan_source
from scanner.findings import Finding
from scanner.formats.sidecars import jinja_template
from scanner.limits import GiB, Limits, MiB
from scanner.rules import Policy, load_ruleset
from scanner.source import BytesSource
from scanner.walk import WalkEntry

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_bombs as bombs  # noqa: E402

RULES = load_ruleset()


def run(data: bytes, name: str, **limits: int) -> tuple[ScanContext, list[Finding]]:
    ctx = ScanContext(RULES, Policy(limits=Limits().with_overrides(limits)))
    return ctx, scan_source(BytesSource(name, None, data), ctx)[1]


def limit_hits(findings: list[Finding]) -> set[str]:
    return {f.evidence or "" for f in findings if f.rule_id == "LIMIT-EXCEEDED"}


# -- compressed streams --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,name", [("gzip", "w.bin.gz"), ("bz2", "w.bin.bz2"), ("xz", "w.bin.xz"),
                                       ("lzma", "w.bin.lzma"), ("zlib", "w.bin.z"), ("lz4", "w.bin.lz4")])
def test_zero_stream_bomb_stops_near_the_floor(kind: str, name: str) -> None:
    ctx, findings = run(bombs.zero_stream(kind, 96 * MiB), name)
    assert "ARCHIVE-BOMB" in rule_ids(findings)
    IN_CHUNK = 1 << 16  # noqa: N806 - scanner.formats.archives.inflate.IN_CHUNK
    lim = Limits()
    # the ratio is judged per MiB out and per 64 KiB in (lz4 takes input ahead of its output, so allow two
    # input steps): the bomb stops near the floor, not at 96 MiB
    assert ctx.budget.total_bytes <= lim.min_bomb_bytes + 2 * IN_CHUNK * lim.max_ratio + MiB, ctx.budget.total_bytes


def test_joblib_style_zlib_bomb_stops_near_the_floor() -> None:
    data = b"ZF" + (b"0x%x" % (96 * MiB)).ljust(19) + bombs.zero_stream("zlib", 96 * MiB)  # joblib < 0.10
    ctx, findings = run(data, "model.joblib")
    assert "ARCHIVE-BOMB" in rule_ids(findings)
    assert ctx.budget.total_bytes <= Limits().min_bomb_bytes + 3 * MiB


def test_inflated_stream_is_spooled_not_held_in_memory() -> None:
    raw = os.urandom(48 * MiB)  # incompressible: an honest stream, not a bomb
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)
    data = gz.compress(raw) + gz.flush()
    del raw
    tracemalloc.start()
    try:
        ctx, findings = run(data, "weights.bin.gz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "ARCHIVE-BOMB" not in rule_ids(findings) and not limit_hits(findings)
    assert ctx.budget.total_bytes == 48 * MiB
    # the old path joined all pieces (2 x 48 MiB); the spool keeps at most its memory part plus one step
    assert peak < 40 * MiB, peak


def test_spool_moves_large_output_to_a_file_and_keeps_the_crc() -> None:
    from scanner.formats.archives.inflate import Spool, SpoolSource

    parent = BytesSource("p", None, b"")
    spool = Spool(memory=1 * MiB)
    blob = os.urandom(3 * MiB)
    for i in range(0, len(blob), 256 * 1024):
        spool.write(blob[i:i + 256 * 1024])
    src = spool.source(parent, "inner")
    assert isinstance(src, SpoolSource) and src.size == len(blob)
    assert src.read_at(MiB - 5, 10) == blob[MiB - 5:MiB + 5]
    assert spool.crc == zlib.crc32(blob)
    src.close()


# -- zip ---------------------------------------------------------------------------------------------------

def test_nested_zip_bomb_shares_one_budget() -> None:
    # 16 x 16 leaves of 32 MiB zeros each (8 GiB declared): each leaf is a declared bomb; once one is
    # reported, the rest of the file gets max_bytes_after_bomb, not 1 MiB per leaf
    ctx, findings = run(bombs.nested_zip(2, 16, 32 * MiB), "42.zip")
    assert "ARCHIVE-BOMB" in rule_ids(findings)
    assert "max_bytes_after_bomb" in limit_hits(findings)
    assert ctx.budget.bomb_at is not None
    assert ctx.budget.total_bytes - ctx.budget.bomb_at <= Limits().max_bytes_after_bomb + 2 * MiB
    assert ctx.budget.total_bytes < 100 * MiB


def test_overlapping_entries_are_found_before_inflating() -> None:
    data = bombs.overlapping_zip(50, 4 * MiB)
    ctx, findings = run(data, "overlap.zip")
    bomb = [f for f in findings if f.rule_id == "ARCHIVE-BOMB"]
    assert bomb and "overlap" in bomb[0].message and "overlapping=49" in (bomb[0].evidence or "")
    # only the covering member is inflated (4 MiB kernel plus the quoted headers), not 50 x 4 MiB
    assert ctx.budget.total_bytes < 5 * MiB
    assert ctx.budget.members <= 2  # member 0000, and the local header it starts with (sniffed as a zip)


def test_directory_with_more_records_than_the_limit_is_refused_before_listing() -> None:
    data = bombs.many_entry_zip(1000)  # end record says 1000; a lying count is covered below
    lying = data[:-14] + (50).to_bytes(2, "little") * 2 + data[-10:]  # both entry counts of the end record
    for blob in (data, lying):
        ctx, findings = run(blob, "many.zip", max_members=100)
        assert "max_members" in limit_hits(findings)
        assert ctx.budget.members == 0  # nothing listed or scanned


def test_hidden_local_headers_stop_at_their_own_bound() -> None:
    hidden = b"".join(bombs._lfh(f"h{i}".encode(), 0, 0, 0, 0) for i in range(3000))
    one = bombs.zip_of([("a.txt", 0, b"hello", zlib.crc32(b"hello"), 5)])
    cd_at = one.index(b"PK\x01\x02")
    body, rest = one[:cd_at], one[cd_at:]
    data = body + hidden + rest[:-6] + (len(body) + len(hidden)).to_bytes(4, "little") + rest[-2:]
    ctx, findings = run(data, "cloak.zip")
    assert "max_hidden_members" in limit_hits(findings)
    assert ctx.budget.members <= Limits().max_hidden_members + 2


# -- tar ---------------------------------------------------------------------------------------------------

def test_targz_listing_bomb_is_counted_while_inflating() -> None:
    data = bombs.many_entry_targz(20_000)  # 10 MiB of headers
    ctx, findings = run(data, "many.tar.gz", max_members=100)
    assert "max_members" in limit_hits(findings)
    assert ctx.budget.total_bytes <= 2 * MiB, ctx.budget.total_bytes
    assert ctx.budget.members == 0
    # under the limit the same archive is counted and scanned in full
    ctx, findings = run(bombs.many_entry_targz(50), "few.tar.gz", max_members=100)
    assert not limit_hits(findings) and ctx.budget.members == 51  # the tar, then its 50 members


# -- per-file deadline -------------------------------------------------------------------------------------

def test_per_file_deadline_stops_the_scan_with_a_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "deep.gz"
    path.write_bytes(bombs.deep_gzip(6))
    clock = iter(range(0, 10_000, 7))  # every look at the clock: 7 s later
    import scanner.engine as engine

    monkeypatch.setattr(engine.time, "monotonic", lambda: float(next(clock)))
    report = scan_file(WalkEntry(path, str(path), tmp_path), RULES, Policy())
    hits = [f for f in report.findings if f.rule_id == "LIMIT-EXCEEDED"]
    assert [f.evidence for f in hits] == ["max_file_seconds"]


# -- chat templates ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("template,bound", [
    ("{{ messages" + "|lower" * 100_000 + " }}", "max_template_filters"),
    ("{% if x %}" * 500 + "a" + "{% endif %}" * 500, "max_template_nesting"),
    ("{{ " + "(" * 500 + "x" + ")" * 500 + " }}", "max_template_nesting"),
    ("{{ x }}" * 30_000, "max_template_tags"),
])
def test_template_bombs_are_bounded_before_jinja_parses(template: str, bound: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parse(source: str) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(jinja_template, "_parse", no_parse)
    hits = jinja_template.analyze_template(template, jinja_template.template_rules(RULES))
    assert len(hits) == 1 and hits[0].kind == "malformed" and bound in hits[0].how


def test_tokenizer_config_filter_chain_is_a_finding() -> None:
    _, findings = run(bombs.jinja_chain(100_000), "tokenizer_config.json")
    bad = [f for f in findings if f.rule_id == "CHAT-TEMPLATE-MALFORMED"]
    assert bad and "max_template_filters" in bad[0].message


def test_real_chat_templates_stay_within_the_bounds() -> None:
    import json

    seen = 0
    for f in (ROOT / "fixtures").rglob("tokenizer_config.json"):
        try:
            t = json.loads(f.read_text(encoding="utf-8")).get("chat_template")
        except (ValueError, AttributeError, UnicodeDecodeError):
            continue
        if isinstance(t, str):
            seen += 1
            assert jinja_template.template_bounds(t) is None, f
    assert seen >= 5


# -- ONNX --------------------------------------------------------------------------------------------------

def test_onnx_field_bomb_is_counted_before_parsing() -> None:
    pytest.importorskip("google.protobuf")
    _, findings = run(bombs.onnx_many_fields(50_000), "model.onnx", max_proto_fields=10_000)
    assert "max_proto_fields" in limit_hits(findings)
    # and below the bound the same shape parses (the check is a bound, not a verdict)
    _, ok = run(bombs.onnx_many_fields(1_000), "model.onnx", max_proto_fields=10_000)
    assert "max_proto_fields" not in limit_hits(ok)


# -- HDF5 sandbox child --------------------------------------------------------------------------------------

@pytest.mark.skipif(not sandbox.available(), reason="needs os.fork")
def test_hdf5_child_cannot_take_a_gib() -> None:
    lim = Limits()
    assert lim.max_hdf5_seconds <= 8 and lim.max_hdf5_memory <= 512 * MiB

    def greedy() -> bytes:
        blob = bytearray(768 * MiB)  # what the mutated .keras made the HDF5 library allocate, and more
        return bytes(blob[:1])

    out = sandbox.run(greedy, seconds=lim.max_hdf5_seconds, max_output=1024, memory=lim.max_hdf5_memory)
    assert out.data is None and out.detail == f"exit status {sandbox.EXIT_NO_MEMORY}"
    assert lim.max_hdf5_memory < 1 * GiB


def test_user_template_limits_reach_the_bound_before_parsing() -> None:
    import json

    from conftest import scan_data
    from scanner.limits import Limits
    from scanner.rules import Policy

    template = "{{ messages[0]['content']" + " | trim" * 10 + " }}"
    doc = json.dumps({"chat_template": template}).encode()
    _, default = scan_data(doc, "tokenizer_config.json")
    assert "CHAT-TEMPLATE-MALFORMED" not in {f.rule_id for f in default}
    policy = Policy(limits=Limits().with_overrides({"max_template_filters": 5}))
    _, tight = scan_data(doc, "tokenizer_config.json", policy=policy)
    assert any(f.rule_id == "CHAT-TEMPLATE-MALFORMED" and "max_template_filters" in f.message for f in tight)
