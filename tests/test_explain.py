"""The triage view: context gathered per finding, and renderers that keep attacker content inert."""

from __future__ import annotations

import base64
import io
import json
import marshal
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from scanner.explain import render_html, render_text
from scanner.explain.collect import ExplainOptions, explain, explain_file
from scanner.explain.textsafe import printable
from scanner.findings import FileReport, Finding, Location, Severity
from scanner.rules import load_ruleset

HOSTILE_TEXT = "<script>document.title='PWNED'</script>\x1b[2J\u202eevil"


def _binunicode(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def hostile_pickle(text: str = HOSTILE_TEXT) -> bytes:
    """protocol 2: os.system(<text>) built by hand (GLOBAL at offset 2, REDUCE near the end)."""
    return b"\x80\x02cos\nsystem\n" + _binunicode(text) + b"\x85R."


def _report(path: Path, findings: tuple[Finding, ...], fmt: str = "pickle") -> FileReport:
    return FileReport(str(path), path.stat().st_size, None, fmt, findings)


def _finding(rule: str = "SCAN-INTERNAL-ERROR", member: str | None = None, offset: int | None = None,
             evidence: str | None = None) -> Finding:
    return Finding(rule, Severity.CRITICAL, f"call of os.system {HOSTILE_TEXT}", Location(member, offset), evidence)


def _blocks(view, title_part: str):
    return [b for b in view.blocks if title_part in b.title]


def test_pickle_context_decompiles_and_lists_opcodes_around_the_offset(tmp_path: Path) -> None:
    data = hostile_pickle()
    p = tmp_path / "evil.pkl"
    p.write_bytes(data)
    reduce_at = len(data) - 2
    fv = explain_file(_report(p, (_finding(offset=reduce_at, evidence="os.system"),)), load_ruleset(),
                      ExplainOptions(context_opcodes=2))
    program = _blocks(fv, "Decompiled pickle program")
    assert len(program) == 1
    assert "from os import system" in program[0].text
    assert "system(" in program[0].text
    view = fv.findings[0]
    (ops,) = [b for b in view.blocks if b.title.startswith("Opcodes")]
    marked = ops.rows[ops.marked[0]]
    assert marked[2] == "REDUCE" and marked[1] == str(reduce_at)
    assert [r[2] for r in ops.rows] == ["BINUNICODE", "TUPLE1", "REDUCE", "STOP"]
    (excerpt,) = [b for b in view.blocks if "excerpt" in b.title]
    assert "from os import system" in excerpt.text.splitlines()[excerpt.marked[0]]


def test_finding_without_offset_shows_the_imports(tmp_path: Path) -> None:
    p = tmp_path / "evil.pkl"
    p.write_bytes(hostile_pickle())
    fv = explain_file(_report(p, (_finding(),)), load_ruleset(), ExplainOptions())
    (ops,) = [b for b in fv.findings[0].blocks if b.title.startswith("Opcodes")]
    assert ops.rows[ops.marked[0]][2] == "GLOBAL"
    assert "os system" in ops.rows[ops.marked[0]][3]


def test_concatenated_pickles_each_decompiled_and_trailing_bytes_noted(tmp_path: Path) -> None:
    first = b"\x80\x02}q\x00."
    p = tmp_path / "multi.pkl"
    p.write_bytes(first + hostile_pickle("echo pwned") + b"\xffjunk")
    fv = explain_file(_report(p, ()), load_ruleset(), ExplainOptions())
    programs = _blocks(fv, "Decompiled pickle program")
    assert [b.title.rsplit(" ", 1)[-1] for b in programs] == ["0)", f"{len(first)})"]
    assert "from os import system" in programs[1].text
    notes = [b.text for b in fv.blocks if b.kind == "note"]
    assert any("trailing bytes" in n or "tokenizer stopped" in n for n in notes)


def test_zip_member_tree_and_member_pickle(tmp_path: Path) -> None:
    p = tmp_path / "model.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", hostile_pickle("echo pwned"))
        z.writestr("<img src=x onerror=alert(1)>.txt", b"hello")
        z.writestr("../escape.txt", b"x")
    fv = explain_file(_report(p, (_finding(member="archive/data.pkl", offset=2),), "zip"), load_ruleset(),
                      ExplainOptions())
    (tree,) = _blocks(fv, "Zip members")
    names = [r[0] for r in tree.rows]
    assert names == ["archive/data.pkl", "<img src=x onerror=alert(1)>.txt", "../escape.txt"]
    assert "path escapes" in tree.rows[2][-1] and 2 in tree.marked
    assert tree.rows[0][3] == "stored"
    (prog,) = _blocks(fv, "Decompiled pickle program of archive/data.pkl")
    assert "from os import system" in prog.text
    (ops,) = [b for b in fv.findings[0].blocks if b.title.startswith("Opcodes")]
    assert ops.rows[ops.marked[0]][2] == "GLOBAL"


def test_zip_local_header_name_mismatch_and_duplicates_are_flagged(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with pytest.warns(UserWarning), zipfile.ZipFile(buf, "w") as z:  # zipfile warns about the duplicate
        z.writestr("data.pkl", b"\x80\x02N.")
        z.writestr("twin.txt", b"a")
        z.writestr("twin.txt", b"b")
    raw = bytearray(buf.getvalue())
    raw[30:38] = b"evil.pkl"  # the first local header now names another file than the directory
    p = tmp_path / "t.zip"
    p.write_bytes(bytes(raw))
    fv = explain_file(_report(p, (), "zip"), load_ruleset(), ExplainOptions())
    (tree,) = _blocks(fv, "Zip members")
    assert "local header name 'evil.pkl'" in tree.rows[0][-1]
    assert "duplicate name" in tree.rows[2][-1]
    assert {0, 2} <= set(tree.marked)


def test_tar_member_tree_shows_links(tmp_path: Path) -> None:
    p = tmp_path / "m.tar"
    with tarfile.open(p, "w") as t:
        info = tarfile.TarInfo("weights.bin")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("cfg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        t.addfile(link)
    fv = explain_file(_report(p, (), "tar"), load_ruleset(), ExplainOptions())
    (tree,) = _blocks(fv, "Tar members")
    assert [r[2] for r in tree.rows] == ["file", "symlink"]
    assert "-> /etc/passwd" in tree.rows[1][-1] and tree.marked == (1,)


def test_keras_lambda_bytecode_is_disassembled(tmp_path: Path) -> None:
    code = compile("lambda x: __import__('os').system('echo pwned')", "<evil>", "eval").co_consts[0]
    blob = base64.encodebytes(marshal.dumps(code)).decode("ascii")
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Lambda", "config": {"name": "sneaky", "function": [blob, None, None]}}]}}
    p = tmp_path / "m.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", "{}")
    fv = explain_file(_report(p, (), "zip"), load_ruleset(), ExplainOptions())
    (block,) = _blocks(fv, "Lambda layer 'sneaky' bytecode")
    assert "system" in block.text and "echo pwned" in block.text


def test_onnx_custom_nodes_and_external_paths(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Evil", ["x"], ["y"], domain="com.attacker", name="n0")
    init = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    init.ClearField("float_data")
    init.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "4")):
        e = init.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.attacker", 1)])
    p = tmp_path / "m.onnx"
    p.write_bytes(model.SerializeToString())
    assert onnx  # imported for the helper only; the collector parses the bytes itself
    fv = explain_file(_report(p, (), "onnx"), load_ruleset(), ExplainOptions())
    (nodes,) = _blocks(fv, "ONNX nodes outside the default domain")
    assert nodes.rows[0][1:] == ("n0", "Evil", "com.attacker")
    (ext,) = _blocks(fv, "ONNX external data")
    assert ext.rows[0][2] == "../../etc/passwd" and "outside" in ext.rows[0][5] and ext.marked == (0,)


def test_printable_neutralises_terminal_and_bidi_controls() -> None:
    out = printable("a\x1b[31mb\u202ec\x00d\u200b")
    assert "\x1b" not in out and "\u202e" not in out and "\x00" not in out and "\u200b" not in out
    assert out == "a\\x1b[31mb\\u202ec\\x00d\\u200b"
    assert printable("ünïcode ok") == "ünïcode ok"


def _explained(tmp_path: Path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(hostile_pickle())
    z = tmp_path / "<svg onload=alert(1)>.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("<img src=x onerror=alert(1)>", hostile_pickle())
    return explain([p, z])


def test_text_render_has_no_raw_control_characters(tmp_path: Path) -> None:
    out = render_text.render(_explained(tmp_path), color=False)
    assert "from os import system" in out
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[2J" in out


def test_html_render_escapes_everything(tmp_path: Path) -> None:
    explanation = _explained(tmp_path)
    page = render_html.render(explanation)
    lowered = page.lower()
    assert "<script" not in lowered and "<img" not in lowered and "<svg" not in lowered
    assert "&lt;svg onload=alert(1)&gt;.zip" in lowered
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in lowered
    assert "&lt;img src=x onerror=alert(1)&gt;" in lowered
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # only our own structural tags, and none that loads anything or runs anything
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "div", "span", "section",
                    "dl", "dt", "dd", "code", "pre", "table", "thead", "tbody", "tr", "th", "td", "p", "details",
                    "summary", "footer"}, tags
    assert not re.search(r"<[^>]*\s(src|href|on[a-z]+)\s*=", page)
    for _, f in explanation.report.findings:
        assert f.rule_id in page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary installed")
def test_html_renders_in_headless_chromium_with_content_inert(tmp_path: Path) -> None:
    explanation = _explained(tmp_path)
    page = tmp_path / "report.html"
    page.write_text(render_html.render(explanation), encoding="utf-8")
    profile = tmp_path / "profile"
    cmd = [_chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    dom = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "modelseal triage report" in dom
    for _, f in explanation.report.findings:
        assert f.rule_id in dom
    assert "from os import system" in dom
    # the hostile strings are text, not elements: no script ran (the title is ours) and no element exists
    assert "<title>modelseal explain:" in dom
    assert "PWNED</title>" not in dom
    assert "<script" not in dom.lower() and "<img" not in dom.lower() and "<svg" not in dom.lower()
    assert "&lt;script&gt;document.title=" in dom
    # and it paints: a screenshot of a real page, not a blank one
    shot = tmp_path / "shot.png"
    cmd[-2:] = ["--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_explain_runs_nothing_under_an_audit_hook(tmp_path: Path) -> None:
    """fickling's decompiler and our listings must not exec, compile, import or spawn what they read."""
    p = tmp_path / "evil.pkl"
    payload = (b"\x80\x02cbuiltins\nexec\n" + _binunicode("import os; os.system('echo pwned')") + b"\x85R0"
               b"cevil_module_xyz\nrun\n" + _binunicode("x") + b"\x85R0" + hostile_pickle("echo pwned")[2:])
    p.write_bytes(payload)
    benign = tmp_path / "ok.pkl"
    benign.write_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s.")
    script = tmp_path / "run.py"
    script.write_text(f"""
import sys
from pathlib import Path
from scanner.explain.collect import explain
from scanner.explain import render_html, render_text
render_text.render(explain([Path({str(benign)!r})]))  # warm-up: import what we legitimately need
render_html.render(explain([Path({str(benign)!r})]))
bad = []
def hook(event, args):
    if event in ("exec", "compile", "os.system", "subprocess.Popen", "os.posix_spawn", "marshal.loads",
                 "pickle.find_class", "ctypes.dlopen", "socket.connect"):
        if event in ("exec", "compile") and str(args[1] if len(args) > 1 else "").endswith(".py"):
            return
        bad.append(event)
    if event == "import" and args[0] in ("evil_module_xyz", "os.system"):
        bad.append("import " + args[0])
sys.addaudithook(hook)
e = explain([Path({str(p)!r})])
out = render_text.render(e) + render_html.render(e)
assert "evil_module_xyz" in out and "exec" in out, out[:2000]
print("VIOLATIONS", bad)
""")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "VIOLATIONS []" in proc.stdout, proc.stdout[-2000:]


def test_cli_explain_writes_html_and_mirrors_scan_exit_code(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scanner.cli import app

    p = tmp_path / "evil.pkl"
    p.write_bytes(hostile_pickle())
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["explain", str(p), "--html", str(out)])
    assert result.exit_code == 1, result.output
    assert out.is_file() and "from os import system" in out.read_text(encoding="utf-8")
    assert "from os import system" in result.output
    missing = CliRunner().invoke(app, ["explain", str(tmp_path / "nope.pkl")])
    assert missing.exit_code == 2


def test_nested_containers_are_opened_along_the_finding_chain(tmp_path: Path) -> None:
    """gzip -> tar -> zip -> pickle: each container on the way gets its member tree, the pickle its program."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("archive/data.pkl", hostile_pickle("echo pwned"))
    p = tmp_path / "bundle.tar.gz"
    with tarfile.open(p, "w:gz") as t:
        info = tarfile.TarInfo("model/pytorch_model.bin")
        info.size = len(inner.getvalue())
        t.addfile(info, io.BytesIO(inner.getvalue()))
    (fv,) = explain([p]).files
    members = {f.location.member for f in fv.report.findings if f.location.member}
    assert any(m.endswith("archive/data.pkl") for m in members), members
    titles = [b.title for b in fv.blocks]
    assert any(t.startswith("Tar members of") for t in titles), titles
    assert any(t.startswith("Zip members of") for t in titles), titles
    (prog,) = [b for b in fv.blocks if b.title.startswith("Decompiled pickle program of")]
    assert "from os import system" in prog.text
