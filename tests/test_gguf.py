from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity
from scanner.formats.sidecars.jinja_template import analyze_template, template_rules
from scanner.limits import Limits
from scanner.rules import Policy, load_ruleset

sys.path.insert(0, str(FIXTURES))
import gen_gguf as gen  # noqa: E402
from gguf_templates import BENIGN as BENIGN_TEMPLATES  # noqa: E402
from gguf_templates import CHATML  # noqa: E402
from gguf_templates import HOSTILE as HOSTILE_TEMPLATES  # noqa: E402

BENIGN = FIXTURES / "benign" / "gguf"
HOSTILE = FIXTURES / "hostile" / "gguf"


@pytest.fixture(scope="module")
def tr():
    return template_rules(load_ruleset())


def kinds(hits) -> set[str]:
    return {h.kind for h in hits}


@pytest.mark.parametrize("path", sorted(BENIGN.glob("*.gguf")), ids=lambda p: p.name)
def test_benign_files_are_clean(path: Path) -> None:
    report = scan_path(path)
    assert report.format == "gguf"
    assert [f for f in report.findings if f.severity > Severity.INFO] == []


@pytest.mark.parametrize("name", sorted(BENIGN_TEMPLATES))
def test_real_world_shaped_templates_have_no_hits(name: str, tr) -> None:
    assert analyze_template(BENIGN_TEMPLATES[name], tr) == []


@pytest.mark.parametrize("name,template,rule,severity", HOSTILE_TEMPLATES, ids=[h[0] for h in HOSTILE_TEMPLATES])
def test_hostile_templates(name: str, template: str, rule: str, severity: str) -> None:
    data = gen.gguf([*gen.BASE_KV, gen.kv_str("tokenizer.chat_template", template)], *gen.ONE_TENSOR)
    _, findings = scan_data(data, "m.gguf")
    assert any(f.rule_id == rule and f.severity == Severity(severity) for f in findings), findings


@pytest.mark.parametrize("template", [
    "{{ x|attr('__cla' ~ 'ss__') }}",
    "{{ x|attr(['__', 'class', '__']|join) }}",
    "{{ x|attr('__CLASS__'|lower) }}",
    "{{ x|attr('%s%s%s'|format('__', 'class', '__')) }}",
    "{{ x|attr('%c%cclass%c%c' % (95, 95, 95, 95)) }}",
    "{{ x|attr('__ssalc__'|reverse) }}",
    "{{ x|attr('XXclassXX'|replace('XX', '__')) }}",
    "{{ x|attr(''.join(['__', 'class__'])) }}",
    "{{ x['__class__'] }}",
    "{{ x|map(attribute='__class__')|list }}",
    "{{ x|selectattr('__class__.__name__')|list }}",
    "{% set a = '__class__' %}{{ x|attr(a) }}",
    "{{ x._private }}",
])
def test_assembled_dunder_names_are_found(template: str, tr) -> None:
    assert kinds(analyze_template(template, tr)) & {"dunder", "escape"}, template


@pytest.mark.parametrize("template", [
    "{{ x.__globals__ }}",
    "{{ x|attr('__glo' ~ 'bals__') }}",
    "{{ x|attr('\\x5f\\x5fbuiltins\\x5f\\x5f') }}",
    "{{ self._TemplateReference__context }}",
    "{{ x.gi_frame.f_back.f_globals }}",
])
def test_escape_terminals_are_critical(template: str, tr) -> None:
    assert "escape" in kinds(analyze_template(template, tr)), template


def test_folding_is_bounded(tr) -> None:
    # a name built by repeated doubling must not blow up memory; it is simply not folded
    template = "{% set a = 'x' %}" + "".join("{% set a = a ~ a %}" for _ in range(40)) + "{{ y|attr(a) }}"
    hits = analyze_template(template, tr)
    assert kinds(hits) <= {"dynamic"}


def test_deeply_nested_template_fails_closed(tr) -> None:
    hits = analyze_template("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", tr)
    assert kinds(hits) == {"malformed"}


def test_syntax_error_and_unknown_tag_are_malformed(tr) -> None:
    assert kinds(analyze_template("{% if %}", tr)) == {"malformed"}
    assert kinds(analyze_template("{% exec 'x' %}", tr)) == {"malformed"}


def test_template_loads_and_gadgets_are_medium(tr) -> None:
    assert "load" in kinds(analyze_template("{% include 'other.j2' %}", tr))
    assert "gadget" in kinds(analyze_template("{{ cycler }}", tr))


def test_hand_writer_matches_gguf_py(tmp_path: Path) -> None:
    """The hostile fixtures are built with our own writer: a well-formed file from it must be clean and
    readable by gguf-py, so hostile variants differ from a valid file only where intended."""
    gguf = pytest.importorskip("gguf")
    data = gen.gguf([*gen.BASE_KV, gen.kv_str("tokenizer.chat_template", CHATML)], *gen.ONE_TENSOR)
    _, findings = scan_data(data, "m.gguf")
    assert findings == []
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    reader = gguf.GGUFReader(str(path))
    assert [t.name for t in reader.tensors] == ["w"]
    assert "tokenizer.chat_template" in reader.fields


def test_gguf_py_reads_the_benign_fixtures() -> None:
    gguf = pytest.importorskip("gguf")
    for path in sorted(BENIGN.glob("*.gguf")):
        reader = gguf.GGUFReader(str(path))
        assert reader.tensors, path


def test_big_endian_is_parsed_not_refused() -> None:
    data = (BENIGN / "big_endian.gguf").read_bytes()
    assert struct.unpack(">I", data[4:8])[0] == 3
    _, findings = scan_data(data, "m.gguf")
    assert findings == []


def test_limits_apply_and_earlier_findings_survive() -> None:
    data = gen.gguf([*gen.BASE_KV, gen.kv_str("tokenizer.chat_template", HOSTILE_TEMPLATES[0][1]),
                     gen.kv("tokenizer.ggml.scores", gen.ARR, struct.pack("<IQ", gen.F32, 100) + b"\0" * 400)],
                    *gen.ONE_TENSOR)
    _, findings = scan_data(data, "m.gguf", policy=Policy(limits=Limits(max_array_items=10)))
    ids = rule_ids(findings)
    assert "LIMIT-EXCEEDED" in ids
    assert "GGUF-TEMPLATE-SSTI" in ids


def test_prefixes_never_pass_and_never_crash() -> None:
    # built without tail padding, so every strict prefix cuts into something that was declared
    data = gen.gguf([*gen.BASE_KV, gen.kv_str("tokenizer.chat_template", CHATML)], *gen.ONE_TENSOR)
    for cut in range(0, len(data), 3):
        _, findings = scan_data(data[:cut], "m.gguf")
        ids = rule_ids(findings)
        assert "SCAN-INTERNAL-ERROR" not in ids, cut
        assert any(f.severity >= Severity.MEDIUM for f in findings), cut


@pytest.mark.parametrize("data,fmt", [
    (b"\x7fELF\x02\x01\x01" + b"\0" * 64, "executable"),
    (b"MZ\x90\x00" + b"\0" * 64, "executable"),
    (b"MZqFpD='\n\n\0\0", "executable"),
    (b"#!/bin/sh\necho hi\n" + b"\0GGUF", "executable"),
    (b"#!/usr/bin/env python\nprint('hi')\n", "text"),
    (b"MZ is a text file about Mozambique\n", "text"),
])
def test_executable_sniffing(data: bytes, fmt: str) -> None:
    got, _ = scan_data(data, "x")
    assert got == fmt


def test_llamafile_embedded_gguf_is_scanned() -> None:
    report = scan_path(HOSTILE / "u03_elf_with_gguf.llamafile")
    assert report.format == "executable"
    assert any(f.location.member and f.location.member.startswith("gguf@") for f in report.findings) or \
        "EXECUTABLE-EMBEDDED-MODEL" in rule_ids(report.findings)
    evil = gen.gguf([*gen.BASE_KV, gen.kv_str("tokenizer.chat_template", HOSTILE_TEMPLATES[0][1])], *gen.ONE_TENSOR)
    _, findings = scan_data(b"\x7fELF" + b"\0" * 60 + evil, "model.llamafile")
    inner = [f for f in findings if f.rule_id == "GGUF-TEMPLATE-SSTI"]
    assert inner and inner[0].location.member.startswith("gguf@")


# -- red-team variants ----------------------------------------------------------------------------------

def _gguf_with(kv: bytes) -> bytes:
    return gen.gguf([*gen.BASE_KV, kv], [gen.tinfo("w", [8])], b"\0" * 32)


SSTI = "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}"


def test_template_stored_as_u8_array_is_still_analyzed() -> None:
    body = struct.pack("<IQ", 0, len(SSTI)) + SSTI.encode()
    _, findings = scan_data(_gguf_with(gen.kv("tokenizer.chat_template", gen.ARR, body)), "m.gguf")
    assert {"GGUF-TEMPLATE-MALFORMED", "GGUF-TEMPLATE-SSTI"} <= rule_ids(findings)


@pytest.mark.parametrize("key", ["tokenizer.chat_template_tool_use", "general.prompt_template", "x.TEMPLATE"])
def test_other_keys_naming_a_template_are_analyzed(key: str) -> None:
    _, findings = scan_data(_gguf_with(gen.kv_str(key, SSTI)), "m.gguf")
    assert "GGUF-TEMPLATE-SSTI" in rule_ids(findings)


def test_template_name_list_is_not_a_template() -> None:
    names = struct.pack("<IQ", 8, 2) + gen.gstr("tool_use") + gen.gstr("rag")
    _, findings = scan_data(_gguf_with(gen.kv("tokenizer.chat_templates", gen.ARR, names)), "m.gguf")
    assert not [f for f in findings if f.severity > Severity.INFO]


@pytest.mark.parametrize("template,hit", [
    ("{% set ns = namespace(p='') %}{% for c in ['__cla', 'ss__'] %}{% set ns.p = ns.p ~ c %}{% endfor %}"
     "{{ ''[ns.p] }}", True),
    ("{% set k = a ~ b %}{{ x[k] }}", True),
    ("{{ x[a ~ b] }}", True),
    ("{{ messages[loop.index0 + 1]['content'] }}{{ message[key] }}", False),
    ("{% set k = 'role' %}{{ message[k] }}", False),
])
def test_subscripts_built_at_render_time(template: str, hit: bool, tr) -> None:
    assert ("dynamic" in kinds(analyze_template(template, tr))) is hit
