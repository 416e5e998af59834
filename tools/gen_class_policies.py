#!/usr/bin/env python3
"""Generate rules/generated/class-policies/*.json from library source, read with `ast` (never imported).

    pip download --no-deps -d /work/cache/wheels torch==2.13.0 transformers scikit-learn ...   # once
    python tools/gen_class_policies.py --wheels /work/cache/wheels

For every class of every analyzed distribution: does reconstructing it (NEWOBJ / copyreg.__newobj__, then
BUILD: `__new__`, `__setstate__`, `__getattr__`, `__setattr__`) or calling it (`__new__` + `__init__`) reach a
sink (tools/class_analysis.py: SINKS) within MAX_DEPTH calls? For every function: does calling it? Verdicts:
s = no path to a sink, x = reaches a sink, u = something on the path cannot be resolved (C code, a value
held in data, a base outside the analyzed source). Several versions of one distribution (joblib's wrappers of
every era) merge to the worst verdict per name.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tools.class_analysis import (  # noqa: E402
    MAX_DEPTH,
    SAFE,
    Analyzer,
    ModuleSource,
    Verdict,
    worst,
)

OUT = HERE.parent / "rules" / "generated" / "class-policies"
COMMAND = "python tools/gen_class_policies.py --wheels DIR  (DIR: `pip download --no-deps` of the libraries)"
# Subtrees that no model file references and that would only cost time: test suites, vendored copies,
# compilers and distributed runtimes (their names are denied by hand anyway)
SKIP = re.compile(r"(^|\.)(tests?|testing|_vendor|vendor|benchmarks?|examples?|conftest)(\.|$)"
                  r"|^torch\.(_inductor|_dynamo|distributed|onnx|_export|export|_functorch|fx\.experimental"
                  r"|utils\.benchmark|_higher_order_ops|_refs|_prims|_decomp|_subclasses|testing)")
_DIST = re.compile(r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<version>[0-9][^-]*)(-|\.tar\.gz$|\.zip$)")


def archive_sources(path: Path) -> tuple[str, str, dict[str, tuple[bool, Callable[[], str]]]]:
    """(distribution, version, {module: (is_package, read)}) of a wheel (zip) or an sdist (tar.gz)."""
    m = _DIST.match(path.name)
    if m is None:
        raise ValueError(f"cannot tell distribution and version from {path.name}")
    dist, version = m["name"].replace("_", "-").lower(), m["version"]
    out: dict[str, tuple[bool, Callable[[], str]]] = {}
    if path.suffix == ".whl" or path.suffix == ".zip":
        z = zipfile.ZipFile(path)
        names = [n for n in z.namelist() if n.endswith(".py")]

        def reader(n: str) -> Callable[[], str]:
            return lambda: z.read(n).decode("utf-8", "replace")
        pairs = [(n, reader(n)) for n in names]
    else:
        t = tarfile.open(path)
        members = {i.name: i for i in t.getmembers() if i.isfile() and i.name.endswith(".py")}
        root = path.name[: -len(".tar.gz")]

        def treader(n: str) -> Callable[[], str]:
            return lambda: t.extractfile(members[n]).read().decode("utf-8", "replace")  # type: ignore[union-attr]
        pairs = []
        for n in members:
            rel = n.split("/", 1)[1] if n.startswith(root + "/") else n
            rel = rel[4:] if rel.startswith("src/") else rel
            pairs.append((rel, treader(n)))
        names = [p for p, _ in pairs]
    for rel, read in pairs:
        parts = rel[:-3].split("/")
        if any(not p.isidentifier() for p in parts) or ".data" in rel.split("/")[0]:
            continue
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        if not parts:
            continue
        mod = ".".join(parts)
        if SKIP.search(mod):
            continue
        out[mod] = (is_pkg, read)
    return dist, version, out


def trusted_from_rules(path: Path) -> dict[str, str]:
    """Hand-reviewed classes: allow-list names (call) and construct-only names (construct)."""
    import tomllib

    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for g in doc.get("allow", []):
        for n in g["names"]:
            out[n] = "call"
    for g in doc.get("construct_only", []):
        for n in g["names"]:
            out[n] = "construct"
    return out


def judge_library(an: Analyzer, sources: ModuleSource, modules: list[str]) -> dict[str, tuple[str, str, str]]:
    """{name: (kind C|F, construct verdict, call verdict, reason)} for every top-level class and function."""
    out: dict[str, tuple[str, str, str]] = {}
    for name in modules:
        mod = sources.get(name)
        if mod is None:
            continue
        for cname in list(mod.classes):
            fq = f"{name}.{cname}"
            try:
                c = an.construct(fq)
                k = worst([c, an.call_class(fq)])
            except RecursionError:
                c = k = Verdict("u", ("analysis too deep",))
            why = c.reason() if c.level != SAFE else k.reason()
            out[fq] = ("C" + c.level + k.level, why, "")
        lib = mod.lib
        aliases = [(a, an.resolve_expr(v, mod, frozenset())) for a, v in mod.assigns.items()
                   if a not in mod.classes and isinstance(v, (ast.Name, ast.Attribute))]
        # re-exports kept for old pickles (gensim's `from gensim.models.keyedvectors import Vocab` (marked noqa) in
        # word2vec): names imported from the same distribution
        aliases += [(a, t) for a, t in mod.imports.items()
                    if a not in mod.classes and "." in t and (sources.get(t.rpartition(".")[0]) or mod).lib == lib
                    and t.rpartition(".")[0] in sources]
        # a module whose PEP 562 __getattr__ forwards every name (sklearn 0.22's deprecated `sklearn.svm.classes`)
        fwd = an.forwards_to(mod)
        target_mod = sources.get(fwd) if fwd else None
        if target_mod is not None:
            aliases += [(c, f"{fwd}.{c}") for c in (*target_mod.classes, *target_mod.imports, *target_mod.assigns)
                        if c not in mod.classes and not c.startswith("__")]
        for alias, target in aliases:
            # `Vocab = CompatVocab`: old pickles name the alias, find_class resolves it to the class
            if target is None:
                continue
            target = an.canonical(target)
            if an.class_node(target) is None:
                continue
            try:
                c = an.construct(target)
                k = worst([c, an.call_class(target)])
            except RecursionError:
                c = k = Verdict("u", ("analysis too deep",))
            why = c.reason() if c.level != SAFE else k.reason()
            out[f"{name}.{alias}"] = ("C" + c.level + k.level, f"alias of {target}: {why}" if why else "", "")
        # `ConstrNode = namedtuple('ConstrNode', [...])`: a tuple subclass, rebuilt by tuple.__new__ (no hooks)
        for aname, value in mod.assigns.items():
            if (isinstance(value, ast.Call) and isinstance(value.func, (ast.Name, ast.Attribute))
                    and an.resolve_expr(value.func, mod, frozenset()) in ("collections.namedtuple",
                                                                          "typing.NamedTuple")):
                out.setdefault(f"{name}.{aname}", ("Css", "", ""))
        for fname in list(mod.funcs):
            fq = f"{name}.{fname}"
            try:
                v = an.judge_function(fq)
            except RecursionError:
                v = Verdict("u", ("analysis too deep",))
            out[fq] = ("F" + v.level, v.reason(), "")
    return out


# `file_bytes.replace(b'gensim.models.doc2vec', b'gensim.models.deprecated.doc2vec')`: a library's own loader
# renames modules in old pickles before unpickling them (gensim 3.x old_saveload)
_RENAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def loader_renames(an: Analyzer, sources: ModuleSource, modules: list[str],
                   judged: dict[str, tuple[str, str, str]]) -> dict[str, tuple[str, str, str]]:
    """Names old pickles use that the library's loader renames (found in its code as
    `.replace(b'<old module>', b'<new module>')` on the file's bytes): judged as the renamed class."""
    out: dict[str, tuple[str, str, str]] = {}
    for name in modules:
        mod = sources.get(name)
        if mod is None:
            continue
        pairs: list[tuple[str, str]] = []
        for node in (*mod.funcs.values(), *mod.classes.values()):
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "replace"
                        and len(sub.args) == 2 and all(isinstance(a, ast.Constant) and isinstance(a.value, bytes)
                                                       for a in sub.args)):
                    old, new = (a.value.decode("ascii", "replace") for a in sub.args)  # type: ignore[union-attr]
                    if _RENAME.match(old) and _RENAME.match(new) and old.split(".")[0] == new.split(".")[0] \
                            == name.split(".")[0] and new in sources:
                        pairs.append((old, new))
        for old, new in pairs:
            for key, entry in judged.items():
                if key.startswith(new + ".") and "." not in key[len(new) + 1:]:
                    alias = old + key[len(new):]
                    renamed = (entry[0], f"renamed by {name} to {key}" + (f": {entry[1]}" if entry[1] else ""), "")
                    # the loader tries the name as written first, then the renamed one: both may run
                    out[alias] = _worse(judged[alias], renamed) if alias in judged else renamed
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheels", type=Path, help="directory of wheels / sdists to analyze")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--rules", type=Path, default=HERE.parent / "rules" / "pickle-globals.toml")
    ap.add_argument("--only", nargs="*", help="analyze only these distributions (still resolving through all)")
    ap.add_argument("--merge", type=Path, help="instead of analyzing: merge another run's output directory (a run "
                    "split with --only across processes) into --out")
    args = ap.parse_args(argv)
    sys.setrecursionlimit(10000)
    if args.merge is not None:
        other = json.loads((args.merge / "index.json").read_text())
        for info in other["libraries"].values():
            (args.out / info["file"]).write_bytes((args.merge / info["file"]).read_bytes())
        mine = json.loads((args.out / "index.json").read_text()) if (args.out / "index.json").exists() else {}
        _write_index(args.out, {**other, "libraries": other["libraries"], "modules": other["modules"]}, mine)
        return 0

    if args.wheels is None:
        ap.error("--wheels is required")
    archives = sorted(p for p in args.wheels.iterdir() if p.suffix in (".whl", ".zip") or p.name.endswith(".tar.gz"))
    by_dist: dict[str, list[tuple[str, dict[str, tuple[bool, Callable[[], str]]]]]] = {}
    for p in archives:
        dist, version, mods = archive_sources(p)
        by_dist.setdefault(dist, []).append((version, mods))
    for versions in by_dist.values():
        versions.sort(key=lambda v: [int(x) if x.isdigit() else 0 for x in re.split(r"[.+]", v[0])])

    def combined(override: tuple[str, dict[str, tuple[bool, Callable[[], str]]]] | None, dist: str | None
                 ) -> ModuleSource:
        src: dict[str, tuple[str, bool, object]] = {}
        for d, versions in by_dist.items():
            _, mods = override if (override is not None and d == dist) else versions[-1]
            for name, (is_pkg, read) in mods.items():
                src.setdefault(name, (d, is_pkg, read))
        return ModuleSource(src)

    trusted = trusted_from_rules(args.rules)
    args.out.mkdir(parents=True, exist_ok=True)
    index: dict[str, object] = {"generated_by": COMMAND, "max_depth": MAX_DEPTH, "libraries": {}, "modules": {}}
    latest = combined(None, None)
    latest_an = Analyzer(latest, trusted)
    order = [d for d in (args.only or sorted(by_dist)) if d in by_dist]
    old_index = json.loads((args.out / "index.json").read_text()) if args.only and (args.out / "index.json").exists() \
        else {}
    for dist in order:
        t0 = time.monotonic()
        merged: dict[str, tuple[str, str, str]] = {}
        seen: dict[str, list[str]] = {}  # name -> versions that define it
        for version, mods in by_dist[dist]:
            if (version, mods) is by_dist[dist][-1]:
                sources, an = latest, latest_an
            else:
                sources = combined((version, mods), dist)
                an = Analyzer(sources, trusted)
            judged = judge_library(an, sources, sorted(mods))
            judged.update(loader_renames(an, sources, sorted(mods), judged))
            for name, entry in judged.items():
                prev = merged.get(name)
                merged[name] = entry if prev is None else _worse(prev, entry)
                seen.setdefault(name, []).append(version)
        versions = [v for v, _ in by_dist[dist]]
        tops = sorted({n.split(".")[0] for _, mods in by_dist[dist] for n in mods})
        names = {k: v[0] for k, v in sorted(merged.items())}
        why = {k: _short(v[1]) for k, v in sorted(merged.items()) if v[1]}
        doc = {"generated_by": COMMAND, "library": dist, "versions": versions, "max_depth": MAX_DEPTH,
               "legend": "C<construct><call> for classes, F<call> for functions; s: no path to a sink, x: reaches "
                         "a sink, u: cannot be decided (unresolved code on the path)",
               "names": names, "why": why,
               # names only some analyzed versions define: [first, last] of them (judged by that code)
               "ranges": {k: [v[0], v[-1]] for k, v in sorted(seen.items()) if len(v) != len(versions)}}
        text = json.dumps(doc, separators=(",", ":"), sort_keys=False)
        fname = f"{dist}.json"
        (args.out / fname).write_text(text + "\n", encoding="utf-8")
        index["libraries"][dist] = {"versions": versions, "file": fname,  # type: ignore[index]
                                    "sha256": hashlib.sha256(text.encode() + b"\n").hexdigest(),
                                    "classes": sum(1 for v in names.values() if v[0] == "C"),
                                    "functions": sum(1 for v in names.values() if v[0] == "F")}
        for top in tops:
            index["modules"].setdefault(top, []).append(dist)  # type: ignore[union-attr]
        counts = {c: sum(1 for v in names.values() if v[0] == "C" and v[1] == c) for c in "sux"}
        print(f"{dist} {versions}: {len(names)} names, construct s/u/x {counts} ({time.monotonic() - t0:.1f}s)",
              flush=True)
        _write_index(args.out, index, old_index)  # after each library: an interrupted run keeps what it did
    return 0


def _write_index(out: Path, index: dict[str, object], old: dict[str, object]) -> None:
    doc = dict(index)
    libs = dict(old.get("libraries", {}))  # type: ignore[call-overload]
    libs.update(index["libraries"])  # type: ignore[call-overload]
    doc["libraries"] = dict(sorted(libs.items()))
    modules: dict[str, set[str]] = {}
    for src in (old.get("modules", {}), index["modules"]):
        for top, dists in src.items():  # type: ignore[attr-defined]
            modules.setdefault(top, set()).update(d for d in dists if d in libs)
    doc["modules"] = {k: sorted(v) for k, v in sorted(modules.items())}
    (out / "index.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


MAX_WHY = 160  # the sink (or the unresolved name) comes first; long call chains are cut after it


def _short(why: str) -> str:
    return why if len(why) <= MAX_WHY else why[:MAX_WHY - 1] + "…"


def _worse(a: tuple[str, str, str], b: tuple[str, str, str]) -> tuple[str, str, str]:
    rank = {"s": 0, "u": 1, "x": 2}
    if a[0][0] != b[0][0]:
        return a if a[0] >= b[0] else b
    code = a[0][0] + "".join(max(x, y, key=rank.__getitem__) for x, y in zip(a[0][1:], b[0][1:], strict=True))
    return code, a[1] or b[1], ""


if __name__ == "__main__":
    raise SystemExit(main())
