"""llamafiles: the executable is reported as code, the zip it carries is scanned member by member."""

from __future__ import annotations

import io
import zipfile

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity, Verdict

HONEST = FIXTURES / "benign" / "llamafile" / "tiny_chatml.llamafile"
HOSTILE = FIXTURES / "hostile" / "llamafile" / "llama_drama.llamafile"
EXECUTABLE = {"EXECUTABLE-FILE", "EXECUTABLE-EMBEDDED-MODEL"}


def test_honest_llamafile_is_an_executable_with_a_clean_model() -> None:
    report = scan_path(HONEST)
    assert report.format == "executable" and report.verdict is not Verdict.CLEAN
    assert rule_ids(report.findings) >= EXECUTABLE
    loud = [f for f in report.findings if f.rule_id not in EXECUTABLE and f.severity > Severity.INFO]
    assert not loud, loud


def test_template_in_the_zip_member_is_found_once() -> None:
    report = scan_path(HOSTILE)
    ssti = [f for f in report.findings if f.rule_id == "GGUF-TEMPLATE-SSTI"]
    assert ssti and all(f.location.member == "tiny.gguf" for f in ssti)
    assert report.verdict is Verdict.MALICIOUS


def test_gguf_outside_the_zip_is_still_scanned() -> None:
    data = HOSTILE.read_bytes()
    z = zipfile.ZipFile(io.BytesIO(data))
    model = z.read("tiny.gguf")
    prologue = data[:data.index(b"PK\x03\x04")]
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as out:
        out.writestr(".args", "-m\nother.gguf\n")
    _, findings = scan_data(prologue + model + zbuf.getvalue(), "x.llamafile")
    hits = [f for f in findings if f.rule_id == "GGUF-TEMPLATE-SSTI"]
    assert hits and all((f.location.member or "").startswith("gguf@") for f in hits)


def test_executable_with_a_broken_zip_directory_still_reports_the_zip() -> None:
    data = bytearray(HONEST.read_bytes())
    cd = data.rindex(b"PK\x01\x02")
    data[cd:cd + 4] = b"XX\x01\x02"
    _, findings = scan_data(bytes(data), "x.llamafile")
    assert rule_ids(findings) & {"ZIP-MALFORMED"} and "EXECUTABLE-FILE" in rule_ids(findings)


def test_default_arguments_are_shown() -> None:
    report = scan_path(HONEST)
    args = [f for f in report.findings if f.rule_id == "LLAMAFILE-ARGS"]
    assert args and args[0].evidence == "-m tiny.gguf --host 127.0.0.1 ..." and args[0].severity is Severity.INFO


def test_deflated_default_arguments_are_inflated() -> None:
    data = HONEST.read_bytes()
    prologue = data[:data.index(b"PK\x03\x04")]
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr(".args", "--server\n--host\n0.0.0.0\n" * 20)
    _, findings = scan_data(prologue + zbuf.getvalue(), "x.llamafile")
    args = [f for f in findings if f.rule_id == "LLAMAFILE-ARGS"]
    assert args and (args[0].evidence or "").startswith("--server --host 0.0.0.0 --server")
