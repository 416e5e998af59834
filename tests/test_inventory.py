"""`modelseal inventory`: what files written by the real libraries record about their producer
(fixtures/gen_provenance.py), read statically; CycloneDX 1.6 output validated against the schema."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES
from scanner.cli import app
from scanner.inventory.collect import collect
from scanner.inventory.facts import FileFacts
from scanner.inventory.readers import front_matter, read_pickle
from scanner.source import BytesSource

PROV = FIXTURES / "provenance"
runner = CliRunner()


def facts_of(path: Path) -> FileFacts:
    (f,) = collect(path).files
    return f


def test_transformers_save_pretrained_folder() -> None:
    inv = collect(PROV / "hf_bert")
    by = {f.name: f for f in inv.files}
    cfg = by["config.json"]
    assert (cfg.producer, cfg.producer_version) == ("transformers", "5.24.0")
    assert cfg.properties["architectures"] == ["BertModel"]
    assert cfg.properties["dtype"] == "float32"
    assert by["model.safetensors"].properties["metadata"] == {"format": "pt"}
    assert inv.card["license"] == "apache-2.0"
    assert inv.card["datasets"] == ["acme/tiny-corpus"]
    assert inv.card["base_model"] == "google-bert/bert-base-uncased"
    assert inv.card["language"] == ["en"]
    import hashlib

    template = (PROV / "hf_bert" / "chat_template.jinja").read_bytes()
    assert by["chat_template.jinja"].properties["chat_template_sha256"] == hashlib.sha256(template).hexdigest()
    assert inv.frameworks() == {"transformers": "5.24.0"}


def test_torch_save_zip() -> None:
    f = facts_of(PROV / "torch_state.pt")
    assert (f.format, f.producer) == ("torch-zip", "torch")
    assert f.properties["serialization_version"] == "3"
    assert f.properties["byteorder"] == "little"
    assert len(f.properties["serialization_id"]) >= 10


def test_keras_v3_archive() -> None:
    f = facts_of(PROV / "keras_model.keras")
    assert (f.format, f.producer, f.producer_version) == ("keras-v3", "keras", "3.15.1")
    assert f.properties["class_name"] == "Sequential"


def test_keras_hdf5_root_attributes_read_in_the_sandbox() -> None:
    f = facts_of(PROV / "keras_model.h5")
    assert (f.format, f.producer, f.producer_version) == ("hdf5", "keras", "3.15.1")
    assert f.properties["backend"] == "torch"
    assert not f.notes


def test_hdf5_without_keras_attributes(tmp_path: Path) -> None:
    # written by h5py with a non-string keras_version: not taken as a version
    import h5py

    p = tmp_path / "plain.h5"
    with h5py.File(p, "w") as h:
        h.attrs["keras_version"] = 3
        h.attrs["other"] = "x"
    f = facts_of(p)
    assert f.format == "hdf5" and f.producer is None and "backend" not in f.properties


@pytest.mark.parametrize("name,fmt", [("sklearn_model.joblib", "joblib"), ("sklearn_model.pkl", "pickle")])
def test_sklearn_version_from_pickle_state(name: str, fmt: str) -> None:
    f = facts_of(PROV / name)
    assert (f.format, f.producer, f.producer_version) == (fmt, "scikit-learn", "1.9.1")
    assert "sklearn" in f.properties["modules"]


def test_xgboost_version_from_the_booster_bytes() -> None:
    f = facts_of(PROV / "xgboost_model.joblib")
    assert (f.producer, f.producer_version) == ("xgboost", "3.2.0")


def test_lightgbm_model_format_and_sklearn_version() -> None:
    f = facts_of(PROV / "lightgbm_model.pkl")
    assert (f.producer, f.producer_version) == ("lightgbm", None)
    assert f.properties["model_format"] == "v4"
    assert f.properties["sklearn_version"] == "1.9.1"
    assert any("format version" in n for n in f.notes)


def test_xgboost_json_booster_version() -> None:
    from scanner.inventory.readers import _xgboost_version

    assert _xgboost_version(b'{"learner": {}, "version": [1, 7, 6]}') == "1.7.6"
    assert _xgboost_version(b"L" + struct.pack(">q", 7) + b"version[$U#U\x03\x02\x01\x05") == "2.1.5"
    assert _xgboost_version(b"L" + struct.pack(">q", 7) + b"version[#U\x09") is None


def test_onnx_export_producer_and_opsets() -> None:
    f = facts_of(PROV / "linear.onnx")
    assert (f.producer, f.producer_version) == ("pytorch", "2.13.0")
    assert f.properties["opset_import"]["ai.onnx"] >= 9
    assert f.properties["ir_version"] >= 7


def test_gguf_general_keys_and_template_digest() -> None:
    import hashlib
    import sys
    sys.path.insert(0, str(FIXTURES))
    from gen_provenance import CHAT_TEMPLATE

    f = facts_of(PROV / "tiny.gguf")
    g = f.properties["general"]
    assert g["general.architecture"] == "llama"
    assert g["general.name"] == "Tiny Llama"
    assert g["general.license"] == "mit"
    assert g["general.base_model.0.name"] == "Acme Base"
    assert f.properties["chat_templates"]["tokenizer.chat_template"] == hashlib.sha256(
        CHAT_TEMPLATE.encode()).hexdigest()


def test_sklearn_version_key_needs_a_string_opcode() -> None:
    # the bytes '_sklearn_version' inside some other constant are not the key
    blob = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00C\x20xx_sklearn_version\x8c\x031.0\x94\x00\x00\x00\x00\x00."
    f = FileFacts("x", len(blob), "0" * 64, "pickle")
    read_pickle(BytesSource("x", None, blob), f)
    assert f.producer_version is None


def test_model_card_front_matter_is_safe_loaded() -> None:
    card = front_matter(b"---\nlicense: mit\ndatasets:\n- a/b\nx: !!python/object/apply:os.system ['id']\n---\n")
    assert card == {} or card.get("license") == "mit"  # the safe loader refuses the tag: no card, no call
    assert front_matter(b"---\nlicense: mit\ndatasets:\n- a/b\n---\n# hi\n") == {"license": "mit",
                                                                                   "datasets": ["a/b"]}


def test_tiny_yaml_fallback_matches_pyyaml() -> None:
    from scanner.inventory.readers import _tiny_yaml

    text = (PROV / "hf_bert" / "README.md").read_text().split("---")[1]
    got = _tiny_yaml(text)
    assert got["license"] == "apache-2.0" and got["datasets"] == ["acme/tiny-corpus"]


def test_truncated_and_hostile_headers_are_notes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 12) + b'{"a": [1, 2 ' + bytes(16))
    gg = tmp_path / "bad.gguf"
    gg.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 5) + struct.pack("<Q", 1 << 50))
    inv = collect(tmp_path)
    assert [f.format for f in inv.files] == ["gguf", "safetensors"]
    assert all(f.notes for f in inv.files), [f.to_dict() for f in inv.files]


def test_producer_advisory_reported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"transformers_version": "4.30.0",
                                                       "architectures": ["GPT2LMHeadModel"]}))
    inv = collect(tmp_path)
    ids = {a.advisory for a in inv.advisories}
    assert {"CVE-2024-3568", "CVE-2023-7018"} <= ids
    (tmp_path / "config.json").write_text(json.dumps({"transformers_version": "4.38.0"}))
    assert collect(tmp_path).advisories == []


def test_cli_text_and_json() -> None:
    r = runner.invoke(app, ["inventory", str(PROV / "keras_model.keras")])
    assert r.exit_code == 0, r.output
    assert "keras 3.15.1" in r.output
    r = runner.invoke(app, ["inventory", "-f", "json", str(PROV / "hf_bert")])
    doc = json.loads(r.output)
    assert doc["inventory"][0]["frameworks"] == {"transformers": "5.24.0"}
    r = runner.invoke(app, ["inventory", str(PROV / "nope")])
    assert r.exit_code == 2


def _validate_cdx(text: str) -> object:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)


def test_cyclonedx_validates_against_1_6() -> None:
    r = runner.invoke(app, ["inventory", "-f", "cyclonedx", str(PROV / "hf_bert"), str(PROV / "tiny.gguf"),
                            str(PROV / "linear.onnx")])
    assert r.exit_code == 0, r.output
    assert _validate_cdx(r.output) is None
    bom = json.loads(r.output)
    assert bom["specVersion"] == "1.6"
    models = [c for c in bom["components"] if c["type"] == "machine-learning-model" and "components" in c]
    assert len(models) == 3
    hf = models[0]
    assert hf["modelCard"]["modelParameters"]["modelArchitecture"] == "BertModel"
    assert {h["alg"] for f in hf["components"] for h in f["hashes"]} == {"SHA-256"}
    data = [c for c in bom["components"] if c["type"] == "data"]
    assert [d["name"] for d in data] == ["acme/tiny-corpus"]
    dep = next(d for d in bom["dependencies"] if d["ref"] == hf["bom-ref"])
    assert "dataset:acme/tiny-corpus" in dep["dependsOn"]
    assert "base-model:google-bert/bert-base-uncased" in dep["dependsOn"]


def test_cyclonedx_validator_catches_a_broken_bom() -> None:
    r = runner.invoke(app, ["inventory", "-f", "cyclonedx", str(PROV / "linear.onnx")])
    bom = json.loads(r.output)
    bom["components"][0]["type"] = "ml-model"   # not a 1.6 component type
    assert _validate_cdx(json.dumps(bom)) is not None


def test_text_output_escapes_terminal_sequences(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"transformers_version": "4.40.0\u001b[2J",
                                                       "architectures": ["X\u202eY"]}))
    r = runner.invoke(app, ["inventory", str(tmp_path)])
    assert r.exit_code == 0
    assert "\x1b" not in r.output and "\u202e" not in r.output
    assert "\\x1b[2J" in r.output


def test_explain_shows_inventory_and_provenance(tmp_path: Path) -> None:
    from scanner.attest.sign import generate_key

    m = tmp_path / "m"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({"transformers_version": "4.44.0"}))
    priv, _ = generate_key("p256")
    (tmp_path / "k.pem").write_bytes(priv)
    r = runner.invoke(app, ["attest", str(m), "--key", str(tmp_path / "k.pem"),
                            "--dataset", "corpus=sha256:" + "ab" * 32 + ",license=MIT"])
    assert r.exit_code == 0, r.output
    out_html = tmp_path / "x.html"
    r = runner.invoke(app, ["explain", str(m), "--html", str(out_html)])
    assert r.exit_code == 0, r.output
    assert "== inventory ==" in r.output and "transformers 4.44.0" in r.output
    assert "dataset corpus sha256:abababababababab… , license MIT".replace("… ,", "…,") in r.output
    page = out_html.read_text()
    assert "Inventory and provenance" in page and "dataset corpus" in page


def test_cyclonedx_datasets_from_a_provenance_statement(tmp_path: Path) -> None:
    from scanner.attest.sign import generate_key

    m = tmp_path / "m"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({"transformers_version": "4.44.0"}))
    priv, _ = generate_key("p256")
    (tmp_path / "k.pem").write_bytes(priv)
    r = runner.invoke(app, ["attest", str(m), "--key", str(tmp_path / "k.pem"), "--dataset",
                            "corpus=sha256:" + "ab" * 32 + ",license=MIT,uri=https://example.org/c"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["inventory", "-f", "cyclonedx", str(m)])
    assert _validate_cdx(r.output) is None
    bom = json.loads(r.output)
    (data,) = [c for c in bom["components"] if c["type"] == "data"]
    assert data["name"] == "corpus" and data["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    assert data["licenses"] == [{"license": {"name": "MIT"}}]
    assert data["data"][0]["contents"]["url"] == "https://example.org/c"
    (model,) = [c for c in bom["components"] if c["type"] == "machine-learning-model"]
    assert bom["dependencies"] == [{"ref": model["bom-ref"], "dependsOn": [data["bom-ref"]]}]


@pytest.mark.parametrize("prefix", [b"GGUF\x03\x00\x00\x00", b"\x10\x00\x00\x00\x00\x00\x00\x00{", b"PK\x03\x04",
                                    b"\x80\x04\x95", b"\x08\x07\x12", b"---\n", b"{"])
def test_readers_never_raise_on_garbage(prefix: bytes, tmp_path: Path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=300))
    def run(tail: bytes) -> None:
        p = tmp_path / "f.bin"
        p.write_bytes(prefix + tail)
        (f,) = collect(p).files
        assert f.sha256 and isinstance(f.notes, list)

    run()


def test_cyclonedx_lists_advisories_of_recorded_producers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"transformers_version": "4.30.0"}))
    r = runner.invoke(app, ["inventory", "-f", "cyclonedx", str(tmp_path)])
    assert _validate_cdx(r.output) is None
    bom = json.loads(r.output)
    vulns = {v["id"]: v for v in bom["vulnerabilities"]}
    assert set(vulns) == {"CVE-2024-3568", "CVE-2023-7018"}
    (model,) = bom["components"]
    (cfg,) = model["components"]
    assert vulns["CVE-2024-3568"]["affects"] == [{"ref": cfg["bom-ref"]}]
    r = runner.invoke(app, ["inventory", str(tmp_path)])
    assert "advisory (info): config.json: recorded transformers 4.30.0 is affected by CVE-2024-3568" in r.output


def test_inventory_of_hostile_fixtures_executes_nothing() -> None:
    import subprocess
    import sys

    from conftest import load_manifests

    n_hostile = sum(1 for e in load_manifests() if e["kind"] == "hostile")
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "audit_inventory.py")], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["collected"] == n_hostile > 0
    assert result["violations"] == []
