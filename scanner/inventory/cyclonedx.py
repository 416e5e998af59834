"""CycloneDX 1.6 ML-BOM of an inventory: one `machine-learning-model` component per model (its files as
`file` sub-components with hashes, a `modelCard`), datasets named by the card as `data` components, and
dependencies model -> datasets / base model. Built as plain JSON (cyclonedx-python-lib has no modelCard
model); the tests validate it against the 1.6 schema shipped in that library."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from scanner.inventory.facts import ModelInventory

SPEC_VERSION = "1.6"


def _ref(kind: str, key: str) -> str:
    return f"{kind}:{key}"


def _props(d: dict[str, Any], prefix: str) -> list[dict[str, str]]:
    out = []
    for k, v in d.items():
        value = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        out.append({"name": f"modelseal:{prefix}{k}", "value": value[:1000]})
    return out


def build_bom(models: list[ModelInventory], *, serial: str | None = None,
              timestamp: str | None = None) -> dict[str, Any]:
    from scanner import __version__

    components: list[dict[str, Any]] = []
    dependencies: list[dict[str, Any]] = []
    vulnerabilities: list[dict[str, Any]] = []
    datasets: dict[str, dict[str, Any]] = {}
    for m in models:
        mref = _ref("model", m.manifest_sha256)
        files = [{
            "type": "file", "bom-ref": _ref("file", f"{m.manifest_sha256[:16]}/{f.name}"), "name": f.name,
            "hashes": [{"alg": "SHA-256", "content": f.sha256}],
            **({"properties": _props({**({"producer": f.producer} if f.producer else {}),
                                      **({"producerVersion": f.producer_version} if f.producer_version else {}),
                                      "format": f.format, **f.properties}, "")}),
        } for f in m.files]
        card: dict[str, Any] = {}
        params: dict[str, Any] = {}
        arch = next((f.properties.get("architectures") or f.properties.get("architecture") for f in m.files
                     if f.properties.get("architectures") or f.properties.get("architecture")), None)
        if arch:
            params["modelArchitecture"] = ", ".join(arch) if isinstance(arch, list) else str(arch)
        deps: list[str] = []
        for name in _as_list(m.card.get("datasets")):
            dref = _ref("dataset", name)
            datasets.setdefault(dref, {"type": "data", "bom-ref": dref, "name": name,
                                       "data": [{"type": "dataset", "name": name}]})
            deps.append(dref)
        for d in m.provenance:  # a provenance statement's datasets carry digests and licenses
            if d["role"] != "dataset":
                continue
            dref = _ref("dataset", d["sha256"] or d["name"])
            comp_d: dict[str, Any] = {"type": "data", "bom-ref": dref, "name": d["name"],
                                      "data": [{"type": "dataset", "name": d["name"]}],
                                      "properties": [{"name": "modelseal:claimedBy",
                                                      "value": f"{d['bundle']} (signature not checked)"}]}
            if d["sha256"]:
                comp_d["hashes"] = [{"alg": "SHA-256", "content": d["sha256"]}]
            if d["license"]:
                comp_d["licenses"] = [{"license": {"name": d["license"]}}]
            if d["uri"]:
                comp_d["data"][0]["contents"] = {"url": d["uri"]}
            datasets[dref] = comp_d
            if dref not in deps:
                deps.append(dref)
        if deps:
            params["datasets"] = [{"ref": d} for d in deps]
        if params:
            card["modelParameters"] = params
        fw = m.frameworks()
        card_props = {**{f"card.{k}": v for k, v in m.card.items()},
                      **{f"framework.{k}": v or "" for k, v in fw.items()}}
        if card_props:
            card["properties"] = _props(card_props, "")
        comp: dict[str, Any] = {
            "type": "machine-learning-model", "bom-ref": mref, "name": m.name,
            "hashes": [{"alg": "SHA-256", "content": m.manifest_sha256}],
            "components": files,
        }
        lic = m.card.get("license")
        if isinstance(lic, str) and lic:
            comp["licenses"] = [{"license": {"name": lic}}]
        if card:
            comp["modelCard"] = card
        base = [b for b in _as_list(m.card.get("base_model"))]
        for b in base:
            bref = _ref("base-model", b)
            components.append({"type": "machine-learning-model", "bom-ref": bref, "name": b})
            deps.append(bref)
        for a in m.advisories:  # the recorded producer version is in an advisory's range: a fact
            vulnerabilities.append({
                "id": a.advisory, "source": {"url": a.reference}, "description": a.enables,
                "affects": [{"ref": _ref("file", f"{m.manifest_sha256[:16]}/{a.file}")}],
                "properties": [{"name": "modelseal:recordedProducer", "value": f"{a.package} {a.version}"}],
            })
        components.append(comp)
        dependencies.append({"ref": mref, "dependsOn": deps})
    components.extend(datasets.values())
    return {
        "bomFormat": "CycloneDX", "specVersion": SPEC_VERSION,
        "serialNumber": serial or f"urn:uuid:{uuid.uuid4()}", "version": 1,
        "metadata": {
            "timestamp": timestamp or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "modelseal", "version": __version__}]},
        },
        "components": components,
        "dependencies": dependencies,
        **({"vulnerabilities": vulnerabilities} if vulnerabilities else {}),
    }


def _as_list(v: Any) -> list[str]:
    if isinstance(v, str) and v:
        return [v]
    if isinstance(v, list):
        return [str(x) for x in v if x]
    return []


def render_cyclonedx(models: list[ModelInventory]) -> str:
    return json.dumps(build_bom(models), indent=2) + "\n"
