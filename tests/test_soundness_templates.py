"""Chat templates that reach attributes by names they compute (fixtures/gen_soundness_templates.py proves the
hostile ones under a plain jinja2.Environment): attribute-name filters, subscripts, folded dict keys."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, scan_path
from scanner.findings import Verdict
from scanner.formats.sidecars.jinja_template import analyze_template, template_rules
from scanner.rules import load_ruleset

ORACLE = Path(os.environ.get("MODELSEAL_ORACLE_PYTHON", "/work/oracle/bin/python"))
TR = template_rules(load_ruleset())
MACRO = "{% macro m() %}{% endmacro %}"


def kinds(template: str) -> set[str]:
    return {h.kind for h in analyze_template(template, TR)}


@pytest.mark.parametrize("use", [
    "[m]|map(attribute=p)", "[m]|selectattr(p)", "[m]|rejectattr(p, 'none')", "[m]|sort(attribute=p)",
    "[m]|sort(false, false, p)", "[m]|groupby(p)", "[m]|groupby(attribute=p)", "[m]|sum(p)", "[m]|unique(false, p)",
    "[m]|min(false, p)", "[m]|max(attribute=p)",
])
def test_every_attribute_name_filter_with_a_computed_name_is_dynamic(use: str) -> None:
    t = MACRO + "{% set p = messages|first %}{{ " + use + " }}"  # p opaque to folding
    assert "dynamic" in kinds(t), use


@pytest.mark.parametrize("use", ["[m]|map(attribute='content')", "messages|selectattr('role', 'equalto', x)",
                                 "messages|sort(attribute='role')", "messages|groupby('role')",
                                 "messages|sum(attribute='n')", "messages|map('upper')"])
def test_constant_attribute_names_stay_quiet(use: str) -> None:
    assert not kinds("{{ " + use + " }}") & {"dynamic", "dunder", "escape"}, use


@pytest.mark.parametrize(("expr", "name"), [
    ("dict(_=1)|first", "_"), ("(dict(_=1)|list)[0]", "_"), ("dict(a=1, _x=2)|last", "_x"),
    ("'_' * 2 + 'globals' + 2 * '_'", "__globals__"), ("(['a', '_b'])[-1]", "_b"),
    ("[dict(_=1)|first, 'x']|join", "_x"),
])
def test_names_from_dict_keys_repetition_and_indexing_fold(expr: str, name: str) -> None:
    hits = analyze_template(MACRO + "{% set k = " + expr + " %}{{ m[k] }}", TR)
    assert any(h.name == name for h in hits), hits


def test_subscripts_by_loop_values_over_constant_lists_are_each_judged() -> None:
    assert "dunder" in kinds(MACRO + "{% for k in ['role', '_func'] %}{{ m[k] }}{% endfor %}")
    assert not kinds("{% set keys = ['role', 'content'] %}{% for k in keys %}{{ messages[0][k] }}{% endfor %}")


def test_keys_from_the_context_and_numbers_are_data() -> None:
    honest = ("{% set ns = namespace(i=0) %}{% for message in messages %}{% set ns.i = ns.i + 1 %}"
              "{{ message[message.keys()|first] }}{% endfor %}{{ messages[ns.i - 1].content }}"
              "{% for i in range(messages|length) %}{{ messages[i] }}{{ messages[loop.index0] }}{% endfor %}"
              "{{ messages[::-1][0] }}{% set r = tools|first %}{{ r[r.type] }}")
    assert "dynamic" not in kinds(honest)


def test_a_key_computed_from_constants_by_unmodelled_filters_is_dynamic() -> None:
    t = MACRO + "{% set d = ['_']|batch(2, '_')|first|join %}{% for k in [d ~ 'x'] %}{{ m[k] }}{% endfor %}"
    assert "dynamic" in kinds(t)
    t = MACRO + "{% macro get(o, k) %}{{ o[k] }}{% endmacro %}{{ get(m, 'a'|center(3)) }}"
    assert "dynamic" in kinds(t)  # a macro parameter is whatever the template passes


@pytest.mark.skipif(not ORACLE.exists(), reason="no oracle venv with jinja2")
def test_plain_jinja_renders_the_hostile_templates_and_the_scanner_flags_them(tmp_path: Path) -> None:
    code = ("import sys, jinja2\njinja2.Environment().from_string(open(sys.argv[1]).read())"
            ".render(messages=[{'role': 'user', 'content': 'hi'}])\n")
    for name in ("map_attribute_path.jinja", "subscript_names.jinja", "subscript_opaque.jinja"):
        run = tmp_path / name
        run.mkdir()
        path = FIXTURES / "hostile" / "soundness_templates" / name
        r = subprocess.run([str(ORACLE), "-c", code, str(path)], cwd=run, capture_output=True, text=True,
                           timeout=120, env={"PATH": os.environ.get("PATH", ""), "HOME": str(run)})
        if "No module named" in r.stderr:
            pytest.skip(r.stderr[-200:])
        assert (run / "pwned").exists(), (name, r.stderr[-400:])
        assert scan_path(path).verdict is not Verdict.CLEAN
    assert scan_path(FIXTURES / "benign" / "soundness_templates" / "indexing.jinja").verdict is Verdict.CLEAN


@pytest.mark.parametrize("key", ["messages and '_func'", "loop.cycle('_func')", "(m|string)[8]",
                                 "messages[0].role if false else '_func'", "(dict(_=1)|list|random)"])
def test_context_reads_do_not_launder_text_the_template_wrote(key: str) -> None:
    t = MACRO + "{% macro _() %}{% endmacro %}{% for x in messages %}{{ m[" + key + "] }}{% endfor %}"
    assert kinds(t) & {"dynamic", "dunder", "escape"}, key


def test_macro_parameters_hold_what_the_call_sites_pass() -> None:
    honest = ("{% macro extra(d, handled) %}{% for k in d if k not in handled %}{{ d[k] }}{% endfor %}{% endmacro %}"
              "{% for tool in tools %}{{ extra(tool.function, ['name']) }}{{ extra(d=tool) }}{% endfor %}")
    assert "dynamic" not in kinds(honest)
    hostile = MACRO + "{% macro get(o, k) %}{{ o[k] }}{% endmacro %}{{ get(m, ['_', 'func']|join) }}"
    assert "dynamic" in kinds(hostile)


def test_map_with_a_computed_filter_name_and_get_with_a_computed_key_are_dynamic() -> None:
    opaque = "{% set d = ['_']|batch(2, '_')|first|join %}"
    assert "dynamic" in kinds(MACRO + opaque + "{{ [m]|map(d ~ 'x', 'y') }}")
    assert "dunder" in kinds(MACRO + "{% for f in ['at' ~ 'tr'] %}{{ [m]|map(f, '_func') }}{% endfor %}")
    assert "dynamic" in kinds(MACRO + opaque + "{% for f in ['attr'] %}{{ [m]|map(f, d ~ 'x') }}{% endfor %}")
    assert "dynamic" in kinds(opaque + "{{ messages[0].get(d ~ 'builtins' ~ d) }}")
    assert not kinds("{{ messages|map('upper') }}{{ messages[0].get('content') }}{% for m in messages %}"
                     "{{ m.get(m.role) }}{% endfor %}") & {"dynamic", "dunder", "escape"}
