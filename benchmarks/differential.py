"""Differential campaign: real loaders (sandboxed, audited) against modelseal's verdict.

    python benchmarks/differential.py --minutes 30 [--seed S] [--jobs 2] [--oracle-python P] [--update-results]

Property checked on every input: when a loader produces a dangerous event, modelseal flags the input (a
finding >= medium, `modelseal scan` exit 1). Inputs: every committed fixture, generated payloads, then seeded
structure-aware mutations until the time is up. Output: benchmarks/differential-out/ (git-ignored):
summary.json and violations/<class>/{input,minimized}.<ext> + info.json. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.oracle import calibrate  # noqa: E402
from benchmarks.oracle.campaign import Stats, run_job  # noqa: E402
from benchmarks.oracle.client import oracle_python  # noqa: E402

OUT = ROOT / "benchmarks" / "differential-out"
BEGIN = "<!-- differential:begin -->"
END = "<!-- differential:end -->"


def _job(kw: dict) -> dict:
    return run_job(**kw)


def ensure_calibration(python: str, out: Path, *, force: bool = False) -> Path:
    """The committed calibration, or (`--recalibrate`, e.g. after a library upgrade) a fresh one in `out`."""
    if not force and calibrate.CALIBRATION.exists():
        return calibrate.CALIBRATION
    fresh = out / "calibration.json"
    calibrate.save(calibrate.calibrate(python, progress=True, base=calibrate.CALIBRATION), fresh)
    return fresh


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--oracle-python", help="interpreter with the real loaders (env MODELSEAL_ORACLE_PYTHON, "
                                            "default: this one)")
    ap.add_argument("--batch", type=int, default=64, help="inputs per forked child (1: a fork per input)")
    ap.add_argument("--timeout", type=float, default=1.0, help="CPU seconds per loader per input")
    ap.add_argument("--max-inputs", type=int, help="stop each job after this many inputs")
    ap.add_argument("--no-minimize", action="store_true")
    ap.add_argument("--recalibrate", action="store_true", help="learn the honest-load noise again")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--update-results", action="store_true", help="write the summary into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    python = oracle_python(args.oracle_python)
    args.out.mkdir(parents=True, exist_ok=True)
    allowed = ensure_calibration(python, args.out, force=args.recalibrate)
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    kws = [dict(python=python, seed=args.seed, job=j, jobs=args.jobs, seconds=args.minutes * 60,
                out=args.out / f"job{j}", allowed=allowed, batch=args.batch, max_inputs=args.max_inputs,
                minimize=not args.no_minimize, timeout=args.timeout, progress=True) for j in range(args.jobs)]
    if args.jobs == 1:
        results = [_job(kws[0])]
    else:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = pool.map(_job, kws)
    wall = time.monotonic() - t0
    # CPU of this process and every process it waited for (jobs, workers, forked loader children): what the
    # campaign would get from dedicated cores, whatever else the machine was running
    cpu = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                resource.getrusage(resource.RUSAGE_CHILDREN)))
    total = Stats()
    for r in results:
        total.merge(Stats.from_dict(r["stats"]))
    run_s = max(r["run_s"] for r in results)
    summary = {"started": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "minutes": args.minutes, "seed": args.seed,
               "jobs": args.jobs, "oracle_python": python, "versions": results[0]["versions"],
               "loaders": sorted({n for r in results for n in r["loaders"]}), "wall_s": round(wall, 1),
               "startup_s": round(max(r["startup_s"] for r in results), 1), "run_s": round(run_s, 1),
               "inputs_per_s": round(total.inputs / run_s, 1) if run_s else 0.0, "cpu_s": round(cpu, 1),
               "inputs_per_cpu_s": round(total.inputs / cpu, 2) if cpu else 0.0,
               "load_avg_end": round(os.getloadavg()[0], 1), **total.to_dict()}
    cal = calibrate.load(allowed)
    summary["calibration"] = {"file": str(allowed.relative_to(ROOT)) if allowed.is_relative_to(ROOT) else str(allowed),
                              "versions_match": cal.get("versions") == summary["versions"]}
    if not summary["calibration"]["versions_match"]:
        print("warning: the calibration was made with other library versions; consider --recalibrate")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    text = render(summary)
    print(text)
    if args.update_results:
        from benchmarks.bench_measure import replace_section
        replace_section(ROOT / "benchmarks" / "RESULTS.md", BEGIN, END, text)
    return 1 if total.violations else 0


def render(s: dict) -> str:
    lines = [BEGIN, "## Differential oracle (`benchmarks/differential.py`)", "",
             f"Run {s['started']}: `python benchmarks/differential.py --minutes {s['minutes']:g} --seed {s['seed']} "
             f"--jobs {s['jobs']}`; oracle python {s['versions'].get('python', '?')} with "
             + ", ".join(f"{k} {v}" for k, v in sorted(s["versions"].items()) if k != "python") + ".", "",
             "| measure | value |", "|---|---|",
             f"| inputs run through the loaders | {s['inputs']:,} |",
             f"| inputs/s (after {s['startup_s']} s worker start-up) | {s['inputs_per_s']} |",
             f"| CPU seconds, all processes (inputs per CPU-second) | {s.get('cpu_s', '?')} "
             f"({s.get('inputs_per_cpu_s', '?')}); 1-min load average at the end {s.get('load_avg_end', '?')} |",
             f"| loaders covered | {len(s['loaders'])}: {', '.join(s['loaders'])} |",
             f"| loader runs | {sum(s['loads'].values()):,} |",
             f"| inputs with a dangerous event | {s['dangerous_inputs']:,} |",
             f"| ... flagged by modelseal | {s['flagged_dangerous']:,} |",
             f"| **violations** (loader fired, modelseal clean) | **{s['violations']:,}** in "
             f"{len(s['violation_classes'])} classes |",
             f"| loader timeouts / crashes | {s['timeouts']} / {s['crashes']} |", "",
             "Dangerous events (inputs) by loader/kind: "
             + ", ".join(f"{k} {v:,}" for k, v in sorted(s["events"].items())) + ".", "",
             "Inputs by source: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s["inputs_by_source"].items())) + "."]
    if s["violation_classes"]:
        lines += ["", "| violation class (loader, event, modelseal format, source) | inputs | example | event |",
                  "|---|---|---|---|"]
        for k, v in sorted(s["violation_classes"].items()):
            lines.append(f"| {k} | {v['count']} | `{v['example']}` | {v['event'][:80]!s} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
