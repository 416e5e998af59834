"""What the inventory says about one file and one model (a file or folder given on the command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FileFacts:
    name: str                                   # relative to the model root ('/'-separated)
    size: int
    sha256: str
    format: str                                 # by content (scanner.sniff), refined by the reader
    producer: str | None = None                 # framework that wrote it ("transformers", "keras", ...)
    producer_version: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)   # other recorded facts, by their own key
    notes: list[str] = field(default_factory=list)             # what could not be read, and why

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "format": self.format,
                "producer": self.producer, "producerVersion": self.producer_version,
                "properties": self.properties, "notes": self.notes}


@dataclass(frozen=True)
class AdvisoryHit:
    file: str
    advisory: str
    package: str
    version: str
    enables: str
    reference: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "advisory": self.advisory, "package": self.package, "version": self.version,
                "enables": self.enables, "reference": self.reference}


@dataclass
class ModelInventory:
    path: str                                   # as given
    name: str
    single_file: bool
    manifest_sha256: str                        # OMS manifest digest (scanner/attest/digest.py)
    files: list[FileFacts]
    card: dict[str, Any] = field(default_factory=dict)        # model card front matter: license, datasets, ...
    advisories: list[AdvisoryHit] = field(default_factory=list)
    # datasets / base models a provenance statement next to the model names (read, not verified here)
    provenance: list[dict[str, Any]] = field(default_factory=list)

    def frameworks(self) -> dict[str, str | None]:
        """producer -> version (the first version any file records)."""
        out: dict[str, str | None] = {}
        for f in self.files:
            if f.producer and not out.get(f.producer):
                out[f.producer] = f.producer_version
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "singleFile": self.single_file,
                "manifestDigest": {"sha256": self.manifest_sha256}, "frameworks": self.frameworks(),
                "card": self.card, "files": [f.to_dict() for f in self.files],
                "advisories": [a.to_dict() for a in self.advisories], "provenance": self.provenance}
