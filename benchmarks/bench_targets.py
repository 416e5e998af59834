#!/usr/bin/env python3
"""Measure the core issue's performance targets on the real CLI and record them.

    python benchmarks/bench_targets.py [--repeat 5] [--skip-torch] [--update-results]

Targets: `modelseal scan` of one small pickle in a fresh process ≤ 0.3 s; a 2 GB torch zip ≤ 0.5 s and
< 150 MB peak; pickle-engine throughput on a 50 MB pickle of many small objects (MB/s, reported);
a 2 GB safetensors and a 2 GB ONNX-with-external-data model ≤ 0.1 s beyond process start; 1,000 small
mixed files (files/s, reported). A missed target is profiled (cProfile, --jobs 1) and its hot spots printed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_corpus as corpus_mod  # noqa: E402
from bench_measure import replace_section, run_measured  # noqa: E402

BEGIN, END = "<!-- benchmarks/bench_targets.py:begin -->", "<!-- benchmarks/bench_targets.py:end -->"


@dataclass
class Target:
    name: str
    measured: str
    bound: str
    met: bool | None          # None: reported, no bound
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    profile: str = ""


def modelseal_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "modelseal"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "scanner.cli"]


def timed_scan(path: Path, repeat: int, extra: tuple[str, ...] = ()) -> tuple[float, float, int]:
    """Median wall and max peak RSS of `modelseal scan PATH --format json` over fresh processes, after one
    warm-up run (bytecode caches written, file in the page cache: the state a user's second scan sees)."""
    walls, peaks, rc = [], [], 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cmd = [*modelseal_cmd(), "scan", str(path), "--format", "json", "--output", os.devnull, *extra]
    run_measured(cmd, timeout=900, env=env)
    for _ in range(repeat):
        m = run_measured(cmd, timeout=900, env=env)
        walls.append(m.wall_s)
        peaks.append(m.peak_rss_mb)
        rc = m.returncode
    return statistics.median(walls), max(peaks), rc


def profile_scan(path: Path, top: int = 14) -> str:
    """cProfile of one scan in a fresh process (single worker so the work is in the profiled process),
    functions sorted by their own time."""
    prof = HERE / "out" / f"profile-{path.name}.prof"
    prof.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "scanner.cli", "scan", str(path),
                    "--format", "json", "--output", os.devnull, "--jobs", "1"], capture_output=True, check=False)
    buf = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start:start + top + 1])


def profile_engine(path: Path, top: int = 14) -> str:
    """cProfile of the engine alone on the first 8 MB of the pickle (enough to rank the hot spots)."""
    code = ("import sys, cProfile, pstats, io\n"
            "from scanner.engine import ScanContext\nfrom scanner.formats.pickle.scan import scan_pickle\n"
            "from scanner.rules import Policy, load_ruleset\nfrom scanner.source import BytesSource\n"
            "data = open(sys.argv[1], 'rb').read()\n"
            "ctx = ScanContext(load_ruleset(), Policy())\n"
            "pr = cProfile.Profile(); pr.enable()\n"
            "scan_pickle(BytesSource('p', None, data), ctx, data)\n"
            "pr.disable(); s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats('tottime').print_stats(TOP)\n"
            "print(s.getvalue())").replace("TOP", str(top))
    cut = HERE / "out" / "many_objects_head.pkl"
    cut.parent.mkdir(parents=True, exist_ok=True)
    cut.write_bytes(path.read_bytes()[: 8 << 20])
    r = subprocess.run([sys.executable, "-c", code, str(cut)], capture_output=True, text=True, check=False)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return "(first 8 MB, sorted by own time)\n" + "\n".join(lines[start:start + top + 1])


_ENGINE = """
import json, sys, time
from scanner.context import ScanContext
from scanner.formats.pickle.scan import scan_pickle
from scanner.rules import Policy, load_ruleset
from scanner.source import BytesSource
data = open(sys.argv[1], "rb").read()
rules = load_ruleset()
best, notes = float("inf"), set()
for _ in range(int(sys.argv[2])):
    ctx = ScanContext(rules, Policy())
    t0 = time.perf_counter()
    results = scan_pickle(BytesSource(sys.argv[1], None, data), ctx, data)
    best = min(best, time.perf_counter() - t0)
    notes |= {f"{f.rule_id} ({f.message}) at opcode {f.location.opcode_index}"
              for r in results for f in r.findings if f.severity.rank >= 2}
print(json.dumps({"bytes": len(data), "best": best, "notes": sorted(notes)}))
"""


def engine_throughput(path: Path, rounds: int = 2) -> tuple[float, float, list[str]]:
    """MB/s of the pickle engine alone (best of `rounds`, in a child process: a parent that grew large
    would pass its peak RSS on to every later child through fork)."""
    r = subprocess.run([sys.executable, "-c", _ENGINE, str(path), str(rounds)], capture_output=True, text=True,
                       check=True)
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    return doc["bytes"] / (1 << 20) / doc["best"], doc["best"], doc["notes"]


def entry_point_cmd() -> list[str]:
    """What the installed `modelseal` script runs (pyproject [project.scripts]), from this checkout."""
    import tomllib

    spec = tomllib.loads((HERE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]["modelseal"]
    module, func = spec.split(":")
    return [sys.executable, "-c", f"import sys; sys.argv[0] = 'modelseal'; from {module} import {func}; {func}()"]


def child_cpu(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """User + system CPU seconds of one fresh process (os.wait4 rusage): load on the machine changes wall time,
    much less the CPU a process needs."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, proc.returncode


def picklescan_exe() -> str | None:
    import shutil

    for cand in (os.environ.get("PICKLESCAN"), "/work/venvs/h4/bin/picklescan", shutil.which("picklescan")):
        if cand and Path(cand).exists():
            return cand
    return None


def startup_vs_picklescan(path: Path, repeat: int) -> tuple[float, float] | None:
    """Median CPU seconds of `modelseal scan PATH` (the entry point, fresh process) and of `picklescan -p PATH`,
    in paired runs (alternating, after one warm-up each)."""
    ps = picklescan_exe()
    if ps is None:
        return None
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(HERE.parent)
    ours = [*entry_point_cmd(), "scan", str(path), "--format", "json", "--output", os.devnull]
    theirs = [ps, "-p", str(path)]
    child_cpu(ours, env)
    child_cpu(theirs, env)
    a, b = [], []
    for _ in range(max(repeat, 10)):
        a.append(child_cpu(ours, env)[0])
        b.append(child_cpu(theirs, env)[0])
    return statistics.median(a), statistics.median(b)


def import_profile(top: int = 12) -> str:
    """`python -X importtime`: the imports that cost most of the start-up (cumulative microseconds)."""
    small = HERE.parent / "fixtures" / "benign" / "containers" / "state_dict.pt"
    r = subprocess.run([sys.executable, "-X", "importtime", *entry_point_cmd()[1:], "scan", str(small),
                        "--output", os.devnull], capture_output=True, text=True, check=False)
    rows = []
    for line in r.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    rows.sort(reverse=True)
    return "import time, cumulative µs (python -X importtime)\n" + "\n".join(f"{us:>9}  {name}"
                                                                           for us, name in rows[:top])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--corpus", type=Path, default=HERE / "corpus" / "targets")
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--skip-torch", action="store_true", help="no 2 GB torch target (needs torch)")
    ap.add_argument("--torch-python", default="/work/venv/bin/python" if Path("/work/venv/bin/python").exists()
                    else sys.executable)
    ap.add_argument("--no-profile", action="store_true", help="do not profile missed targets")
    ap.add_argument("--update-results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    size = int(args.size_gb * corpus_mod.GiB)
    corpus = args.corpus
    corpus.mkdir(parents=True, exist_ok=True)
    targets: list[Target] = []

    def log(msg: str) -> None:
        print(msg, flush=True)

    # process start reference: the same CLI on a 20-byte JSON file
    tiny = corpus / "tiny.json"
    tiny.write_text('{"hidden_size": 8}\n')
    base_wall, base_rss, _ = timed_scan(tiny, args.repeat)
    py_start = statistics.median(run_measured([sys.executable, "-c", "pass"]).wall_s for _ in range(args.repeat))
    log(f"reference: python start {py_start:.3f}s, modelseal scan of a tiny JSON {base_wall:.3f}s")

    # 1. one small pickle, fresh process
    small = corpus / "small.pkl"
    small.write_bytes(b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x04step\x94K\x07\x8c\x04loss"
                      b"\x94G?\xe0\x00\x00\x00\x00\x00\x00u.")
    wall, rss, rc = timed_scan(small, args.repeat)
    met = wall <= 0.3
    prof = "" if met or args.no_profile else import_profile() + "\n\n" + profile_scan(small)
    targets.append(Target("scan one small pickle (fresh process)", f"{wall:.3f} s", "≤ 0.3 s", met, wall, rss, prof))

    # 1b. start-up against picklescan: one small torch file, CPU time in paired fresh processes
    torch_small = HERE.parent / "fixtures" / "benign" / "containers" / "state_dict.pt"
    paired = startup_vs_picklescan(torch_small, args.repeat)
    if paired is not None:
        ours, theirs = paired
        ratio = ours / theirs
        targets.append(Target("start-up: scan one small torch file vs picklescan (CPU, paired fresh processes)",
                              f"{ours:.3f} s vs {theirs:.3f} s = {ratio:.2f}×", "≤ 1.2× picklescan", ratio <= 1.2,
                              ours, None, "" if ratio <= 1.2 or args.no_profile else import_profile()))
    else:
        log("picklescan not installed (pip install picklescan, or PICKLESCAN=/path): start-up comparison skipped")

    # 2. 2 GB torch zip
    if not args.skip_torch:
        g = corpus_mod.torch_group(corpus, args.torch_python, size)
        path = g.labelled[0].path
        wall, rss, rc = timed_scan(path, args.repeat)
        met = wall <= 0.5 and rss < 150
        targets.append(Target(f"2 GB torch zip ({path.stat().st_size >> 20} MiB)", f"{wall:.3f} s, {rss:.0f} MB peak",
                              "≤ 0.5 s, < 150 MB", met, wall, rss, "" if met or args.no_profile else profile_scan(path)))

    # 3. pickle-engine throughput
    many = corpus_mod.many_objects_pickle(corpus / "many_objects.pkl")
    mbs, secs, notes = engine_throughput(many)
    measured = f"{mbs:.1f} MB/s ({secs:.2f} s)"
    if notes:
        measured += "; benign file flagged: " + "; ".join(notes)
    targets.append(Target(f"pickle engine, {many.stat().st_size / (1 << 20):.0f} MB of small objects", measured,
                          "reported (and no finding)", None if not notes else False, secs,
                          profile="" if args.no_profile else profile_engine(many)))

    # 4. 2 GB safetensors and ONNX with external data: beyond process start
    for label, group in (("2 GB safetensors", corpus_mod.safetensors_group(corpus, size)),
                         ("2 GB ONNX with external data", corpus_mod.onnx_group(corpus, args.torch_python, size))):
        path = group.labelled[0].path
        wall, rss, rc = timed_scan(path, args.repeat)
        extra = wall - base_wall
        met = extra <= 0.1
        targets.append(Target(label, f"{wall:.3f} s ({extra:+.3f} s beyond start, {rss:.0f} MB peak)",
                              "≤ 0.1 s beyond process start", met, wall, rss,
                              "" if met or args.no_profile else profile_scan(path)))

    # 5. 1,000 small mixed files
    g = corpus_mod.small_files_group(corpus, 1000)
    wall, rss, rc = timed_scan(g.root, max(1, args.repeat // 2))
    targets.append(Target("1,000 small mixed files", f"{1000 / wall:.0f} files/s ({wall:.2f} s)", "reported", None,
                          wall, rss))

    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/bench_targets.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}",
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "reference": f"python start {py_start:.3f} s; modelseal scan of a 20-byte JSON {base_wall:.3f} s "
                         f"({base_rss:.0f} MB)"}
    table = ["| target | measured | bound | met |", "|---|---|---|---|"]
    for t in targets:
        met = "–" if t.met is None else ("yes" if t.met else "**MISSED**")
        table.append(f"| {t.name} | {t.measured} | {t.bound} | {met} |")
    profiles = [f"### Profile: {t.name}\n\n```\n{t.profile}\n```" for t in targets if t.profile]
    out = HERE / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "targets.json").write_text(json.dumps({"meta": meta, "targets": [asdict(t) for t in targets]}, indent=1))
    md = "\n".join([f"Run {meta['date']} on {meta['machine']} (load average {meta['load']}):  ",
                    f"`{meta['command']}`  ", f"Reference: {meta['reference']}.", "", *table])
    (out / "targets.md").write_text(md + "\n\n" + "\n\n".join(profiles) + "\n")
    print()
    print(md)
    for p in profiles:
        print()
        print(p)
    if args.update_results:
        _update(HERE / "RESULTS.md", md, profiles)
    return 0


def _update(path: Path, md: str, profiles: list[str]) -> None:
    body = [BEGIN, "## Performance targets (`benchmarks/bench_targets.py`)", "", md]
    if profiles:
        body += ["", "Profiles of the missed targets and of the engine's throughput run (cProfile of one run, "
                 "`--jobs 1`, functions by own time):", "", *profiles]
    body.append(END)
    section = "\n".join(body)
    replace_section(path, BEGIN, END, section)


if __name__ == "__main__":
    raise SystemExit(main())
