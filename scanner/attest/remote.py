"""`modelseal attest URL`: a remote model streamed once into a private temporary folder, each file hashed as
its bytes arrive, then scanned from that copy. Nothing is read from the store twice, and what is attested is
exactly what was scanned (an object replaced mid-run cannot split the digest from the verdict). The names,
ignore rules and manifest order are those of a local attest, so the same bytes give the same statement."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scanner.attest.digest import DigestError, FileDigest, ModelDigest, is_ignored_top, sort_key
from scanner.rules import Policy


def fetch_model(url: str, policy: Policy, dest: Path, options: Mapping[str, Any] | None = None) -> ModelDigest:
    """Download the file or every file under the prefix `url` into `dest` (hashing while streaming)."""
    from scanner.remote import RemoteError, RemoteSource, filesystem, walk_url

    try:
        entries = list(walk_url(url, policy, options))
    except RemoteError as e:
        raise DigestError(str(e)) from None
    single = len(entries) == 1 and entries[0].url == url
    files: list[FileDigest] = []
    ignored: set[str] = set()
    for e in entries:
        if e.error is not None:
            raise DigestError(f"{e.url}: {e.error}")
        rel = posixpath.basename(e.fs_path.rstrip("/")) if single else e.url[len(url.rstrip("/")):].lstrip("/")
        parts = rel.split("/")
        if not rel or {"", ".", ".."} & set(parts):
            raise DigestError(f"{e.url}: not a file name a local copy can take")
        if not single and is_ignored_top(parts[0]):
            ignored.add(parts[0])
            continue
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs, _ = filesystem(e.root_url, e.options)
            size = e.size if e.size is not None else int(fs.info(e.fs_path)["size"])
            src = RemoteSource(fs, e.fs_path, size, e.url)
            sha = src.spool(target)
        except (RemoteError, OSError, KeyError, ValueError, TypeError) as err:
            raise DigestError(f"cannot read {e.url}: {err}") from None
        files.append(FileDigest(rel, target, size, sha))
    if not files:
        raise DigestError(f"{url}: no files to attest")
    root = files[0].path if single else dest
    return ModelDigest(root, single, tuple(sorted(files, key=lambda d: sort_key(d.name))), tuple(sorted(ignored)))
