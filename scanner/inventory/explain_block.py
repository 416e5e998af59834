"""The inventory and provenance block of `modelseal explain` (terminal and HTML). The provenance shown
here is read, not verified (explain takes no trusted keys): `modelseal verify` checks signatures."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from scanner.explain.textsafe import printable


def _models(paths: list[Path]) -> list[Any]:
    from scanner.attest.digest import DigestError
    from scanner.inventory.collect import collect

    out = []
    for p in paths:
        try:
            out.append(collect(p))
        except DigestError:
            continue
    return out


def provenance_dependencies(path: Path) -> list[dict[str, Any]]:
    """{role, name, sha256, license, uri, bundle} of what a provenance bundle next to `path` names (unverified)."""
    from scanner.attest.provenance_verify import default_provenance_bundles

    out: list[dict[str, Any]] = []
    for b in default_provenance_bundles(path):
        try:
            doc = json.loads(b.read_bytes())
            payload = doc["dsseEnvelope"]["payload"] if "dsseEnvelope" in doc else None
            st = json.loads(base64.b64decode(payload)) if payload else doc
            deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for d in deps if isinstance(deps, list) else []:
            if not isinstance(d, dict):
                continue
            ann = d.get("annotations") if isinstance(d.get("annotations"), dict) else {}
            sha = d["digest"].get("sha256") if isinstance(d.get("digest"), dict) else None
            out.append({"role": str(ann.get("role", "?")), "name": str(d.get("name", "?")),
                        "sha256": sha if isinstance(sha, str) and len(sha) == 64 else None,
                        "license": ann.get("license") if isinstance(ann.get("license"), str) else None,
                        "uri": d.get("uri") if isinstance(d.get("uri"), str) else None, "bundle": b.name})
    return out


def provenance_lines(path: Path) -> list[str]:
    """What a provenance bundle next to `path` claims (unverified), one line per dependency."""
    lines: list[str] = []
    bundle = None
    for d in provenance_dependencies(path):
        if d["bundle"] != bundle:
            bundle = d["bundle"]
            lines.append(f"provenance {bundle} (signature not checked here; run modelseal verify):")
        sha = f" sha256:{d['sha256'][:16]}…" if d["sha256"] else ""
        lic = f", license {d['license']}" if d["license"] else ""
        lines.append(f"  {d['role']} {d['name']}{sha}{lic}")
    return lines


def text_block(paths: list[Path]) -> str:
    from scanner.inventory.render import render_text

    models = _models(paths)
    if not models:
        return ""
    out = ["", "== inventory ==", render_text(models).rstrip("\n")]
    for p in paths:
        out += [printable(x, max_chars=400) for x in provenance_lines(p)]
    return "\n".join(out) + "\n"


def html_block(paths: list[Path]) -> str:
    from scanner.inventory.render import render_text

    models = _models(paths)
    if not models:
        return ""
    prov = [x for p in paths for x in provenance_lines(p)]
    body = html.escape(render_text(models) + ("\n".join(prov) + "\n" if prov else ""))
    return f'<section class="inventory"><h2>Inventory and provenance</h2><pre>{body}</pre></section>'
