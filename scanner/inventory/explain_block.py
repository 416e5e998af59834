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


def provenance_lines(path: Path) -> list[str]:
    """What a provenance bundle next to `path` claims (unverified)."""
    from scanner.attest.provenance_verify import default_provenance_bundles

    lines: list[str] = []
    for b in default_provenance_bundles(path):
        try:
            doc = json.loads(b.read_bytes())
            payload = doc["dsseEnvelope"]["payload"] if "dsseEnvelope" in doc else None
            st = json.loads(base64.b64decode(payload)) if payload else doc
            deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        except (OSError, ValueError, KeyError, TypeError):
            lines.append(f"provenance {b.name}: unreadable")
            continue
        lines.append(f"provenance {b.name} (signature not checked here; run modelseal verify):")
        for d in deps if isinstance(deps, list) else []:
            if not isinstance(d, dict):
                continue
            ann = d.get("annotations") if isinstance(d.get("annotations"), dict) else {}
            sha = (d.get("digest") or {}).get("sha256", "") if isinstance(d.get("digest"), dict) else ""
            lic = f", license {ann['license']}" if ann.get("license") else ""
            lines.append(f"  {ann.get('role', '?')} {d.get('name', '?')}"
                         + (f" sha256:{str(sha)[:16]}…" if sha else "") + lic)
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
