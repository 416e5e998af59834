"""Expand command-line paths into files: directories recursively, symlinks never followed silently."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from scanner.findings import Finding, Location, Severity
from scanner.record import field, record
from scanner.rules import Policy, RuleSet


@record
class WalkEntry:
    path: Path
    display: str
    root: Path
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    scan: bool = True  # False: report the findings only (e.g. a link leaving the scanned folder)


def _finding(rules: RuleSet, rule_id: str, message: str, evidence: str) -> Finding:
    meta = rules.meta(rule_id)
    sev = meta.severity if meta else Severity.HIGH
    return Finding(rule_id, sev, message, Location(), evidence, meta.reference if meta else None)


def walk_paths(paths: list[Path], policy: Policy, rules: RuleSet) -> Iterator[WalkEntry]:
    for p in paths:
        display = str(p)
        try:
            st = p.stat()
        except OSError as e:
            yield WalkEntry(p, display, p.parent, error=f"cannot access: {e.strerror or e}")
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(p, policy, rules)
        elif stat.S_ISREG(st.st_mode):
            yield WalkEntry(p, display, p.resolve().parent)
        else:
            yield WalkEntry(p, display, p.parent, error="not a regular file or directory")


def _walk_dir(root: Path, policy: Policy, rules: RuleSet) -> Iterator[WalkEntry]:
    """Files under `root` in sorted order. A file reached by several paths (links, hard links) is scanned
    once, under the first path that is a symlink if there is one: in a Hugging Face cache
    (`snapshots/<rev>/model.safetensors -> ../../blobs/<sha>`) the report names the file a loader opens,
    not the content-addressed blob."""
    real_root = root.resolve()
    order: list[tuple[tuple[int, int] | None, bool, WalkEntry]] = []  # (inode key, via link, entry)

    def onerror(e: OSError) -> None:
        errors.append(e)

    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            full = Path(dirpath) / name
            rel = os.path.relpath(full, root)
            if policy.ignored(rel):
                continue
            display = str(full)
            is_link = full.is_symlink()
            if is_link:
                target = Path(os.path.realpath(full))
                inside = target == real_root or real_root in target.parents
                if not inside:
                    order.append((None, True, _symlink_outside(full, display, root, rel, target, rules)))
                    continue
                if not target.exists():
                    order.append((None, True, WalkEntry(full, display, root,
                                                        error=f"broken symlink -> {os.readlink(full)}")))
                    continue
                if not target.is_file():
                    continue  # a link to a directory inside the root is walked as that directory
            try:
                st = full.stat()
            except OSError as e:
                order.append((None, is_link, WalkEntry(full, display, root, error=f"cannot access: {e.strerror or e}")))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            order.append(((st.st_dev, st.st_ino), is_link, WalkEntry(full, display, root)))
    chosen: dict[tuple[int, int], int] = {}
    for i, (key, via_link, _) in enumerate(order):
        if key is None:
            continue
        if key not in chosen or (via_link and not order[chosen[key]][1]):
            chosen[key] = i
    for i, (key, _, entry) in enumerate(order):
        if key is None or chosen[key] == i:
            yield entry
    for e in errors:
        yield WalkEntry(Path(e.filename or root), str(e.filename or root), root,
                        error=f"cannot list: {e.strerror or e}")


def _symlink_outside(full: Path, display: str, root: Path, rel: str, target: Path, rules: RuleSet) -> WalkEntry:
    f = _finding(rules, "PATH-SYMLINK-OUTSIDE", f"symlink points outside the scanned folder ({target}); not followed",
                 f"{rel} -> {os.readlink(full)}")
    return WalkEntry(full, display, root, [f], scan=False)
