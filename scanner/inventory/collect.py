"""Collect the inventory of model files and folders: digests (as attest computes them) plus what each
file records about its producer, read by scanner/inventory/readers.py. Nothing is loaded or imported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from scanner.inventory.facts import AdvisoryHit, FileFacts, ModelInventory
from scanner.source import FileSource, Source


def _readers() -> dict[str, Callable[[Source, FileFacts], None]]:
    from scanner.inventory import readers as r

    return {"safetensors": r.read_safetensors, "onnx": r.read_onnx, "gguf": r.read_gguf, "zip": r.read_zip,
            "pickle": r.read_pickle}


def collect(path: Path, *, allow_symlinks: bool = False) -> ModelInventory:
    """The inventory of one model (a file or a folder). DigestError when it cannot be digested."""
    from scanner.advisories import for_producer
    from scanner.attest.digest import digest_model
    from scanner.inventory.readers import read_text
    from scanner.sniff import sniff

    model = digest_model(path, allow_symlinks=allow_symlinks)
    files: list[FileFacts] = []
    card: dict[str, Any] = {}
    readers = _readers()
    for fd in model.files:
        src = FileSource(fd.path, fd.name)
        try:
            fmt = sniff(src)
            facts = FileFacts(fd.name, fd.size, fd.sha256, fmt)
            try:
                if fmt in readers:
                    readers[fmt](src, facts)
                elif fmt == "hdf5":
                    from scanner.inventory.hdf5_attrs import read_hdf5

                    read_hdf5(src, facts)
                elif fmt == "text":
                    card = read_text(src, facts, fd.name) or card
            except Exception as e:  # noqa: BLE001 - a reader failing on hostile bytes is a note, not a crash
                facts.notes.append(f"not read: {type(e).__name__}")
        finally:
            src.close()
        files.append(facts)
    inv = ModelInventory(str(path), path.name, model.single_file, model.manifest_digest, files, card)
    from scanner.inventory.explain_block import provenance_dependencies

    inv.provenance = provenance_dependencies(path)
    for f in files:
        for adv in for_producer(f.producer, f.producer_version):
            inv.advisories.append(AdvisoryHit(f.name, adv.id, adv.package, f.producer_version or "", adv.enables,
                                              adv.reference))
    return inv


def collect_all(paths: list[Path], *, allow_symlinks: bool = False) -> list[ModelInventory]:
    return [collect(p, allow_symlinks=allow_symlinks) for p in paths]
