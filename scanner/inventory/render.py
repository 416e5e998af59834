"""Text and JSON renderings of an inventory."""

from __future__ import annotations

import json

from scanner.explain.textsafe import printable
from scanner.inventory.facts import ModelInventory


def render_json(models: list[ModelInventory]) -> str:
    return json.dumps({"inventory": [m.to_dict() for m in models]}, indent=2, sort_keys=False) + "\n"


def render_text(models: list[ModelInventory]) -> str:
    out: list[str] = []
    for m in models:
        out.append(f"{m.path}: {len(m.files)} file(s), manifest sha256:{m.manifest_sha256}")
        fw = ", ".join(f"{k} {v}" if v else k for k, v in m.frameworks().items())
        if fw:
            out.append(f"  frameworks: {fw}")
        for k, v in m.card.items():
            out.append(f"  card {k}: {', '.join(v) if isinstance(v, list) else v}")
        for f in m.files:
            who = f" {f.producer}{' ' + f.producer_version if f.producer_version else ''}" if f.producer else ""
            out.append(f"  {f.name} [{f.format}]{who} sha256:{f.sha256[:16]}…")
            for k, v in f.properties.items():
                out.append(f"      {k}: {_short(v)}")
            for n in f.notes:
                out.append(f"      note: {n}")
        for a in m.advisories:
            out.append(f"  advisory (info): {a.file}: recorded {a.package} {a.version} is affected by "
                       f"{a.advisory}: {a.enables} ({a.reference})")
    # file names and every recorded value come from the files: no terminal escapes reach the screen
    return "\n".join(printable(line, max_chars=2000) for line in out) + "\n"


def _short(v: object, n: int = 160) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return s if len(s) <= n else s[:n] + "…"
