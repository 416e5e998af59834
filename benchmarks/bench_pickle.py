#!/usr/bin/env python3
"""Throughput of the pickle engine (MB/s and opcodes/s) on large pickles of many small objects.

    python benchmarks/bench_pickle.py [--mb 50] [--repeat 3] [--only NAME] [--profile] [--limits]

Pickles are written by the stdlib pickler (nothing here is ever unpickled):
  records-p2 / records-p4 / records-p5: a list of dicts of small ints, floats and short strings;
  state-dict-p2: a torch-like state dict (OrderedDict of `torch._utils._rebuild_tensor_v2` calls on persistent
  storage ids, as torch.save writes it at protocol 2), made with stand-in callables whose module names are
  patched in the protocol-2 text (GLOBAL lines carry no length prefix, so the patch keeps the stream valid).
The engine alone is timed (in memory, `scan_pickle` with the default rules, the pickle limits raised so the whole
file is scanned; what the default limits make of it is printed too), best of --repeat;
MB/s and opcodes/s are per CPU second (the wall clock of a shared machine is printed too).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pickle
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # a checkout that is not installed

from scanner.engine import ScanContext  # noqa: E402
from scanner.formats.pickle.machine import Counters  # noqa: E402
from scanner.formats.pickle.scan import _scan  # noqa: E402
from scanner.limits import Limits  # noqa: E402
from scanner.rules import Policy, load_ruleset  # noqa: E402
from scanner.source import BytesSource  # noqa: E402

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]


def _records(n: int, rng: random.Random) -> list[dict[str, object]]:
    return [{"id": i, "score": rng.random(), "count": rng.randrange(1 << 16), "flag": rng.random() < 0.5,
             "name": f"{rng.choice(WORDS)}-{rng.randrange(1000)}", "tag": rng.choice(WORDS),
             "ratio": round(rng.random(), 3), "small": rng.randrange(200)} for i in range(n)]


def records_pickle(mb: float, protocol: int, seed: int = 1) -> bytes:
    """A list of dicts grown in chunks until the pickle reaches `mb` megabytes."""
    rng = random.Random(seed)
    one = len(pickle.dumps(_records(2000, rng), protocol=protocol)) / 2000
    return pickle.dumps(_records(int(mb * (1 << 20) / one), rng), protocol=protocol)


def _rebuild_tensor_v2(*args: object) -> None:  # stand-in: only its name is pickled
    raise NotImplementedError


class FloatStorage:  # stand-in for torch.FloatStorage
    pass


class _Tensor:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel

    def __reduce__(self) -> tuple[object, ...]:
        storage = _Storage(self.key, self.numel)
        return (_rebuild_tensor_v2, (storage, 0, (self.numel,), (1,), False, collections.OrderedDict()))


class _Storage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _Storage):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def state_dict_pickle(mb: float) -> bytes:
    def build(n: int) -> bytes:
        sd = collections.OrderedDict(
            (f"encoder.layers.{i // 6}.{['q', 'k', 'v', 'o', 'ff1', 'ff2'][i % 6]}.weight", _Tensor(str(i), 64 + i % 7))
            for i in range(n))
        buf = io.BytesIO()
        _TorchLikePickler(buf, protocol=2).dump(sd)
        mod = _rebuild_tensor_v2.__module__.encode()
        return (buf.getvalue().replace(b"c" + mod + b"\n_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_tensor_v2\n")
                .replace(b"c" + mod + b"\nFloatStorage\n", b"ctorch\nFloatStorage\n"))

    one = len(build(2000)) / 2000
    return build(int(mb * (1 << 20) / one))


CASES = {
    "records-p2": lambda mb: records_pickle(mb, 2),
    "records-p4": lambda mb: records_pickle(mb, 4),
    "records-p5": lambda mb: records_pickle(mb, 5),
    "state-dict-p2": state_dict_pickle,
}


# hostile streams that run until the opcode budget (max_pickle_opcodes) is spent: how long such a file takes
LIMIT_CASES = {
    "BINGET+POP": (b"\x80\x02N\x94", b"h\x000"),
    "EMPTY_DICT+POP": (b"\x80\x02", b"}0"),
    "text INT+POP": (b"", b"I1234\n0"),
    "GLOBAL+POP": (b"\x80\x02", b"cfoo\nbar\n0"),
    "REDUCE os.system": (b"\x80\x02cos\nsystem\nq\x00", b"h\x00)R0"),
    "BUILD __setstate__": (b"\x80\x02cfoo\nbar\nq\x00h\x00)R", b"}X\x0c\x00\x00\x00__setstate__Nsb"),
}


def limit_cases(ctx: ScanContext) -> None:
    budget = ctx.limits.max_pickle_opcodes
    print(f"\nhostile streams that spend the opcode budget (max_pickle_opcodes = {budget:,d})")
    print(f"{'case':<20} {'MB':>6} {'opcodes':>11} {'CPU s':>7} {'wall s':>7}  limit reached")
    for name, (head, unit) in LIMIT_CASES.items():
        data = head + unit * (budget // max(1, len(unit) - 1) + 1) + b"N."
        cpu, wall, ops, rules = scan_once(data, ctx)
        print(f"{name:<20} {len(data) / (1 << 20):6.1f} {ops:11,d} {cpu:7.2f} {wall:7.2f}  "
              f"{'yes' if any(r.startswith('LIMIT-EXCEEDED') for r in rules) else 'NO'}", flush=True)


def scan_once(data: bytes, ctx: ScanContext) -> tuple[float, float, int, list[str]]:
    """(CPU s, wall s, opcodes run, findings) of one scan; CPU time is what a shared machine can compare."""
    counters = Counters()
    c0, t0 = time.process_time(), time.perf_counter()
    results = _scan(BytesSource("bench.pkl", None, data), ctx, data, 0, True, counters)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    found = sorted({f.rule_id + (f"({f.evidence})" if f.rule_id == "LIMIT-EXCEEDED" else "")
                    for r in results for f in r.findings})
    return cpu, wall, getattr(counters, "ops", counters.opcodes), found  # (an older engine counts opcodes only)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="size of each pickle (default 50)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N scans per pickle (default 3)")
    ap.add_argument("--only", action="append", choices=sorted(CASES), help="run only these cases")
    ap.add_argument("--profile", action="store_true", help="cProfile one scan per case and print hot spots")
    ap.add_argument("--save", type=Path, help="also write each pickle into this folder")
    ap.add_argument("--limits", action="store_true", help="also time hostile streams that spend the opcode budget")
    args = ap.parse_args()
    rules = load_ruleset()
    ctx = ScanContext(rules, Policy())
    # throughput is measured with the pickle limits out of the way (the whole file is scanned); what the
    # default limits make of the same file is printed after it
    unlimited = ScanContext(rules, Policy(limits=Limits(max_pickle_opcodes=1 << 40, max_pickle_memo=1 << 40,
                                                        max_pickle_stack=1 << 40)))
    print(f"python {sys.version.split()[0]}; {args.mb:g} MB per pickle; best of {args.repeat}")
    print(f"{'case':<15} {'MB':>7} {'opcodes':>11} {'CPU s':>7} {'wall s':>7} {'MB/s':>7} {'Mops/s':>7}  findings")
    for name in args.only or list(CASES):
        data = CASES[name](args.mb)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / f"{name}.pkl").write_bytes(data)
        best, wall, ops, found = min(scan_once(data, unlimited) for _ in range(args.repeat))
        mb = len(data) / (1 << 20)
        print(f"{name:<15} {mb:7.1f} {ops:11,d} {best:7.2f} {wall:7.2f} {mb / best:7.1f} {ops / best / 1e6:7.2f}  "
              f"{', '.join(found) or '-'}", flush=True)
        cpu, _, dops, dfound = scan_once(data, ctx)
        limited = [f for f in dfound if f.startswith("LIMIT-EXCEEDED")]
        if limited:
            print(f"{'':<15} default limits: {', '.join(limited)} after {dops:,d} opcodes ({cpu:.2f} s CPU)")
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(scan_once, data, unlimited)
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    if args.limits:
        limit_cases(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
