"""Keras's root attributes of a legacy HDF5 model (`keras_version`, `backend`), read with h5py in the
scanner's sandbox (a forked child with time and memory caps), after the same global-heap soundness check
the HDF5 walk makes: a corrupt heap hangs the library on variable-length strings."""

from __future__ import annotations

import json

from scanner.inventory.facts import FileFacts
from scanner.source import Source

ATTRS = ("keras_version", "backend")
SECONDS = 10
MAX_VALUE = 200


def read_hdf5(src: Source, facts: FileFacts) -> None:
    from scanner import sandbox
    from scanner.formats.hdf5 import heap as hdf5_heap
    from scanner.limits import Limits

    path = src.path
    if path is None or not sandbox.available():
        facts.notes.append("HDF5 attributes not read (no sandbox here)")
        return
    if hdf5_heap.heap_problems(src, hdf5_heap.size_of_lengths(src, 0)):
        facts.notes.append("HDF5 attributes not read: corrupt global heap")
        return
    from scanner.formats.hdf5.reader import _h5py

    h5py = _h5py()  # in the parent, plugins off, so the child does not import

    def work() -> bytes:
        from h5py import h5a

        out: dict[str, str] = {}
        with h5py.File(str(path), "r", locking=False) as f:
            for name in ATTRS:
                if name not in f.attrs:
                    continue
                aid = h5a.open(f.id, name.encode())
                if aid.dtype.kind not in ("S", "O", "U") or aid.get_storage_size() > 4096:
                    continue
                v = f.attrs[name]
                if isinstance(v, bytes):
                    v = v.decode("utf-8", "replace")
                if isinstance(v, str):
                    out[name] = v[:MAX_VALUE]
        return json.dumps(out).encode()

    outcome = sandbox.run(work, seconds=SECONDS, max_output=64 * 1024, memory=Limits().max_hdf5_memory)
    if outcome.data is None:
        facts.notes.append(f"HDF5 attributes not read: sandbox {outcome.problem} ({outcome.detail})")
        return
    try:
        doc = json.loads(outcome.data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        facts.notes.append("HDF5 attributes: invalid result from the sandbox")
        return
    if "keras_version" in doc:
        facts.producer, facts.producer_version = "keras", doc["keras_version"]
    if "backend" in doc:
        facts.properties["backend"] = doc["backend"]
