"""One campaign job: inputs -> real loaders (oracle) -> modelseal on every input a loader fired on.

A violation is an input on which some loader produced a dangerous event while modelseal's verdict is not
flagged (no finding >= medium: `modelseal scan` would exit 0). Violations are grouped into classes
(loader, event kind, modelseal format, input source), the first of each class is minimized and written out.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.oracle import mutate, payloads
from benchmarks.oracle.client import Input, Oracle, Outcome
from benchmarks.oracle.corpus import ROOT, ext_of, fixture_files
from benchmarks.oracle.verdict import Scanner, ScanVerdict


@dataclass
class Stats:
    inputs: int = 0
    loads: Counter = field(default_factory=Counter)  # loader -> inputs it ran on
    events: Counter = field(default_factory=Counter)  # "loader/kind" -> inputs with that event
    dangerous_inputs: int = 0
    flagged_dangerous: int = 0
    violations: int = 0
    classes: dict[str, dict] = field(default_factory=dict)
    by_source: Counter = field(default_factory=Counter)
    timeouts: int = 0
    crashes: int = 0

    def merge(self, other: Stats) -> None:
        self.inputs += other.inputs
        self.loads.update(other.loads)
        self.events.update(other.events)
        self.dangerous_inputs += other.dangerous_inputs
        self.flagged_dangerous += other.flagged_dangerous
        self.violations += other.violations
        self.by_source.update(other.by_source)
        self.timeouts += other.timeouts
        self.crashes += other.crashes
        for k, v in other.classes.items():
            if k in self.classes:
                self.classes[k]["count"] += v["count"]
            else:
                self.classes[k] = v

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "loads": dict(self.loads), "events": dict(self.events),
                "dangerous_inputs": self.dangerous_inputs, "flagged_dangerous": self.flagged_dangerous,
                "violations": self.violations, "violation_classes": self.classes,
                "inputs_by_source": dict(self.by_source), "timeouts": self.timeouts, "crashes": self.crashes}

    @classmethod
    def from_dict(cls, d: dict) -> Stats:
        return cls(d["inputs"], Counter(d["loads"]), Counter(d["events"]), d["dangerous_inputs"],
                   d["flagged_dangerous"], d["violations"], d["violation_classes"], Counter(d["inputs_by_source"]),
                   d["timeouts"], d["crashes"])


def source_kind(origin: str) -> str:
    if origin.startswith("payload:"):
        return "payload:" + origin.split("/")[-1]
    if origin.startswith("mutation:"):
        steps = origin.rsplit(" ", 1)[1] if " " in origin else ""
        m = re.match(r"[a-z0-9-]+", steps)
        return "mutation:" + (m.group() if m else "?")
    return "fixture"


def inputs_for(seed: int, job: int, jobs: int, *, fixtures: bool = True, generated: bool = True,
               mutations: bool = True) -> Iterator[Input]:
    """Every committed fixture, every generated payload, then seeded mutations forever (job-strided)."""
    files = fixture_files()
    n = 0
    if fixtures:
        for i, p in enumerate(files):
            if i % jobs == job:
                yield Input(f"f{n}", p.read_bytes(), ext_of(p), str(p.relative_to(ROOT)), p.name)
                n += 1
    if generated:
        for i, (origin, data, ext) in enumerate(payloads.payloads()):
            if i % jobs == job:
                yield Input(f"g{n}", data, ext, origin)
                n += 1
    if not mutations:
        return
    rng = random.Random(f"{seed}/{job}")
    cache: dict[Path, bytes] = {}
    pool = files + [None] * max(1, len(files) // 8)  # None: mutate a generated payload instead
    plist = mutate._payload_list()
    while True:
        p = rng.choice(pool)
        if p is None:
            origin, base, ext = rng.choice(plist)
            name = ""
        else:
            if p not in cache:
                cache[p] = p.read_bytes()
            base, ext, origin, name = cache[p], ext_of(p), str(p.relative_to(ROOT)), p.name
        data, recipe = mutate.mutate(base, rng, rounds=rng.choice([1, 1, 1, 2, 3]))
        yield Input(f"m{n}", data, ext, f"mutation:{origin} {recipe}", name)
        n += 1


class Job:
    def __init__(self, oracle: Oracle, out: Path, *, minimize: bool = True, minimize_seconds: float = 30) -> None:
        self.oracle = oracle
        self.scanner = Scanner()
        self.out = out
        self.minimize = minimize
        self.minimize_seconds = minimize_seconds
        self.stats = Stats()
        self.queue: list[tuple[Input, str, str, Path, dict]] = []  # violations waiting to be minimized
        self.scandir = Path(tempfile.mkdtemp(prefix="scan-", dir=oracle.root))

    def verdict(self, inp: Input) -> ScanVerdict:
        path = self.scandir / inp.filename
        path.write_bytes(inp.data)
        try:
            return self.scanner.scan(path)
        finally:
            path.unlink()

    def account(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            st = self.stats
            st.inputs += 1
            st.by_source[source_kind(o.input.origin)] += 1
            for name, res in o.loaders.items():
                st.loads[name] += 1
                if res["status"] == "timeout":
                    st.timeouts += 1
                elif res["status"].startswith("crash"):
                    st.crashes += 1
            if not o.events:
                continue
            st.dangerous_inputs += 1
            for key in {f"{e['loader']}/{e['kind']}" for e in o.events}:
                st.events[key] += 1
            v = self.verdict(o.input)
            if v.flagged:
                st.flagged_dangerous += 1
                continue
            self.violation(o, v)

    def violation(self, o: Outcome, v: ScanVerdict) -> None:
        st = self.stats
        st.violations += 1
        ev = o.events[0]
        key = f"{ev['loader']}|{ev['kind']}|{v.format}|{source_kind(o.input.origin)}"
        if key in st.classes:
            st.classes[key]["count"] += 1
            return
        digest = hashlib.sha256(o.input.data).hexdigest()[:12]
        d = self.out / "violations" / f"{len(st.classes):03d}-{digest}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"input-{o.input.filename}").write_bytes(o.input.data)
        info = {"class": key, "origin": o.input.origin, "events": o.events, "scan": v.__dict__,
                "loaders": o.loaders, "size": len(o.input.data)}
        (d / "info.json").write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")
        if self.minimize:
            self.queue.append((o.input, ev["loader"], ev["kind"], d, info))
        st.classes[key] = {"count": 1, "example": str(d.relative_to(self.out)), "origin": o.input.origin,
                           "event": f"{ev['name']}: {ev['key']}"[:200], "scan_format": v.format,
                           "scan_rules": list(v.rules)}

    def minimize_queued(self) -> None:
        """Only while no batch is outstanding (the workers answer in order)."""
        while self.queue:
            inp, loader, kind, d, info = self.queue.pop(0)
            small = minimize_input(self, inp, loader, kind, self.minimize_seconds)
            (d / f"minimized-{inp.filename}").write_bytes(small)
            info["minimized_size"] = len(small)
            (d / "info.json").write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")

    def still_violates(self, inp: Input, loader: str, kind: str) -> bool:
        out = self.oracle.run([inp], loaders=[loader])[0]
        if not any(e["loader"] == loader and e["kind"] == kind for e in out.events):
            return False
        return not self.verdict(inp).flagged


def minimize_input(job: Job, inp: Input, loader: str, kind: str, seconds: float) -> bytes:
    """ddmin over byte chunks: drop chunks while the loader still fires and modelseal still says clean."""
    deadline = time.monotonic() + seconds
    data = inp.data
    n = 2
    trial = 0
    while len(data) >= 2 and time.monotonic() < deadline:
        size = max(1, len(data) // n)
        reduced = False
        for start in range(0, len(data), size):
            if time.monotonic() >= deadline:
                break
            cand = data[:start] + data[start + size:]
            trial += 1
            if cand and job.still_violates(Input(f"x{trial}", cand, inp.ext, inp.origin, inp.name), loader, kind):
                data = cand
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if size == 1:
                break
            n = min(len(data), n * 2)
    return data


def run_job(python: str | None, seed: int, job: int, jobs: int, seconds: float, out: Path, *,
            allowed: Path | None, batch: int = 64, max_inputs: int | None = None, minimize: bool = True,
            timeout: float = 1.0, progress: bool = False) -> dict:
    started = time.monotonic()
    deadline = started + seconds
    with Oracle(python, batch=batch, allowed=allowed, timeout=timeout) as oracle:
        ready = time.monotonic()
        j = Job(oracle, out, minimize=minimize)
        gen = inputs_for(seed, job, jobs)
        last = ready
        # two chunks in flight: the workers load one while this process generates, scans and accounts
        inflight = [oracle.submit([next(gen) for _ in range(batch * 2)])]
        while inflight:
            more = time.monotonic() < deadline and (max_inputs is None or j.stats.inputs < max_inputs)
            if more and len(inflight) < 2:
                inflight.append(oracle.submit([next(gen) for _ in range(batch * 2)]))
            j.account(oracle.collect(inflight.pop(0)))
            if j.queue:  # minimizing runs the oracle: nothing else may be outstanding
                for h in inflight:
                    j.account(oracle.collect(h))
                inflight = []
                j.minimize_queued()
                if more:
                    inflight.append(oracle.submit([next(gen) for _ in range(batch * 2)]))
            if progress and time.monotonic() - last > 30:
                last = time.monotonic()
                print(f"  job {job}: {j.stats.inputs} inputs, {j.stats.dangerous_inputs} dangerous, "
                      f"{j.stats.violations} violations", flush=True)
        loaders = oracle.available
        versions = oracle.versions
    return {"stats": j.stats.to_dict(), "startup_s": ready - started, "run_s": time.monotonic() - ready,
            "loaders": loaders, "versions": versions}
