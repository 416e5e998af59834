#!/usr/bin/env python3
"""Top-level module names a real installation plausibly has, from a list of the most downloaded PyPI
distributions (a `pypi.tsv` with columns name, version, month, rank_among_15000_most_downloaded, ...).

    python tools/gen_popular_modules.py --pypi-tsv /usr/share/package-lists/pypi.tsv

Writes rules/generated/popular-modules.json. Used where the plain reading of joblib array bytes decides
whether an unknown module is one "no installation has" (loader fails) or one a victim may have installed:
each distribution name is folded the ways import names usually differ from it, and the few well-known
exceptions are added by hand. Listing too many names only makes the scanner stricter.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import names that no folding of the distribution name gives (distribution -> module)
EXCEPTIONS = {
    "pillow": "PIL", "opencv-python": "cv2", "opencv-python-headless": "cv2", "beautifulsoup4": "bs4",
    "scikit-learn": "sklearn", "scikit-image": "skimage", "protobuf": "google", "pyyaml": "yaml",
    "python-dateutil": "dateutil", "attrs": "attr", "pyjwt": "jwt", "pycryptodome": "Crypto",
    "pyopenssl": "OpenSSL", "setuptools": "pkg_resources", "ipython": "IPython", "gitpython": "git",
    "pytorch-lightning": "pytorch_lightning", "faiss-cpu": "faiss", "tensorflow-cpu": "tensorflow",
    "paddlepaddle": "paddle", "mxnet": "mxnet", "msgpack-python": "msgpack", "pyzmq": "zmq",
    "pywin32": "win32api", "pyserial": "serial", "dnspython": "dns", "pymupdf": "fitz",
    "python-magic": "magic", "pysocks": "socks", "pytest": "_pytest", "typing-extensions": "typing_extensions",
}


def folds(dist: str) -> set[str]:
    base = re.sub(r"[-.]+", "_", dist.lower())
    out = {base}
    for pre in ("python_", "py_", "py"):
        if base.startswith(pre) and len(base) > len(pre) + 1:
            out.add(base[len(pre):])
    for suf in ("_python", "_py", "_cpu", "_gpu", "_headless", "_binary", "_client", "_sdk"):
        if base.endswith(suf) and len(base) > len(suf) + 1:
            out.add(base[: -len(suf)])
    out.add(base.rstrip("0123456789_") or base)
    return {n for n in out if n.isidentifier()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pypi-tsv", required=True, type=Path)
    ap.add_argument("--top", type=int, default=15000)
    ap.add_argument("--out", type=Path, default=ROOT / "rules" / "generated" / "popular-modules.json")
    args = ap.parse_args()
    names: set[str] = set()
    with args.pypi_tsv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            rank = (row.get("rank_among_15000_most_downloaded") or "").strip()
            if not rank.isdigit() or int(rank) > args.top:
                continue
            dist = row["name"].strip()
            names |= folds(dist)
            if dist.lower() in EXCEPTIONS:
                names.add(EXCEPTIONS[dist.lower()])
    doc = {
        "generated_by": f"python tools/gen_popular_modules.py --pypi-tsv PYPI_TSV --top {args.top}",
        "source": "the package registry's list of the most downloaded distributions (rank column)",
        "note": "lower-cased candidate import names; matching compares the lower-cased top-level module",
        "names": sorted({n.lower() for n in names}),
    }
    args.out.write_text(json.dumps(doc, indent=0) + "\n", encoding="utf-8")
    print(f"{len(doc['names'])} names -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
