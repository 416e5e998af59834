"""Known-vulnerable loader libraries (rules/advisories.toml): which advisories a recorded producer version
or an installed loader falls under. Installed versions are read from distribution metadata
(importlib.metadata), never by importing the library."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# the inventory's producer names -> the PyPI package whose advisories apply
PRODUCER_PACKAGES = {"torch": "torch", "pytorch": "torch", "keras": "keras", "transformers": "transformers",
                     "onnx": "onnx", "scikit-learn": "scikit-learn", "joblib": "joblib"}


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    package: str
    affected: str             # PEP 440 specifier set
    loaders: tuple[str, ...]
    enables: str
    reference: str

    def covers(self, version: str) -> bool:
        """True when `version` is in the affected range; an unparsable version is treated as affected
        (fail closed: we cannot show it is not)."""
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        try:
            v = Version(version)
        except InvalidVersion:
            return True
        return SpecifierSet(self.affected).contains(v, prereleases=True)

    def line(self, version: str) -> str:
        return f"{self.id} ({self.package} {version} is {self.affected}): {self.enables} — {self.reference}"


def load_advisories(directory: Path | None = None) -> tuple[Advisory, ...]:
    return _load(str(directory) if directory is not None else None)


@lru_cache(maxsize=4)
def _load(directory: str | None) -> tuple[Advisory, ...]:
    from packaging.specifiers import SpecifierSet

    from scanner.rules import rules_dir, toml_module

    tomllib = toml_module()

    path = (Path(directory) if directory else rules_dir()) / "advisories.toml"
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    out = []
    for e in doc.get("advisory", []):
        SpecifierSet(e["affected"])  # a typo in the data fails loudly here, not silently at match time
        out.append(Advisory(e["id"], tuple(e.get("aliases", ())), e["package"], e["affected"],
                            tuple(e["loaders"]), e["enables"], e["reference"]))
    return tuple(out)


def installed_version(package: str) -> str | None:
    """The installed distribution's version from its metadata, or None when not installed."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def for_version(package: str, version: str, advisories: tuple[Advisory, ...] | None = None) -> list[Advisory]:
    return [a for a in (advisories or load_advisories()) if a.package == package and a.covers(version)]


def for_loader(loader: str, advisories: tuple[Advisory, ...] | None = None) -> list[tuple[Advisory, str]]:
    """(advisory, installed version) for every advisory of `loader` whose package is installed affected."""
    out = []
    versions: dict[str, str | None] = {}
    for a in advisories or load_advisories():
        if loader not in a.loaders:
            continue
        if a.package not in versions:
            versions[a.package] = installed_version(a.package)
        v = versions[a.package]
        if v is not None and a.covers(v):
            out.append((a, v))
    return out


def for_producer(producer: str | None, version: str | None) -> list[Advisory]:
    package = PRODUCER_PACKAGES.get((producer or "").lower())
    if package is None or not version:
        return []
    return for_version(package, version)
