#!/usr/bin/env python3
"""Scan one corpus with modelseal and its peers (picklescan, modelscan, ModelAudit) and compare:
hostile files detected / missed, benign files flagged, wall time, peak memory, ratios against modelseal.

    python benchmarks/run.py                      # fixtures + 1,000 small files + 2 GB safetensors
    python benchmarks/run.py --full --install-peers --update-results

Results: benchmarks/out/results.{json,md,png}; --update-results copies the headline into RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_corpus as corpus_mod  # noqa: E402
import bench_tools as tools_mod  # noqa: E402
from bench_measure import replace_section, run_measured  # noqa: E402

ALL_GROUPS = ("fixtures", "small", "safetensors", "torch", "onnx", "honest")
DEFAULT_GROUPS = ("fixtures", "small", "safetensors")
BEGIN, END = "<!-- benchmarks/run.py:begin -->", "<!-- benchmarks/run.py:end -->"


@dataclass
class RunResult:
    tool: str
    group: str
    returncode: int
    wall_s: float
    peak_rss_mb: float
    timed_out: bool
    statuses: dict[str, str] = field(default_factory=dict)  # labelled path -> detected | clean | error
    parse_error: str = ""
    mode: str = "folder"  # "per-file" when the run over the folder gave no usable output


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tools", default="modelseal,picklescan,modelscan,modelaudit",
                    help="comma-separated tools (peers not installed are skipped)")
    ap.add_argument("--groups", default=",".join(DEFAULT_GROUPS),
                    help=f"corpus groups to build and scan, from: {', '.join(ALL_GROUPS)}")
    ap.add_argument("--full", action="store_true", help="every group (the torch one needs --torch-python)")
    ap.add_argument("--install-peers", action="store_true",
                    help="create benchmarks/.peers-venv and pip-install the peers there")
    ap.add_argument("--corpus", type=Path, default=HERE / "corpus", help="where the corpus is generated")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="where results are written")
    ap.add_argument("--fixtures", type=Path, default=corpus_mod.FIXTURES, help="the fixtures folder to copy")
    ap.add_argument("--families", default="",
                    help="comma-separated fixture families (manifest-<family>.toml) to copy and score; default all")
    ap.add_argument("--fixtures-limit", type=int, default=None, help="label only the first N hostile/benign")
    ap.add_argument("--honest-corpus", type=Path,
                    default=Path(os.environ.get("MODELSEAL_HONEST_CORPUS", HERE / "corpus" / "honest")),
                    help="the honest corpus (benchmarks/honest_corpus.py build --out DIR); built when absent")
    ap.add_argument("--honest-sample", type=int, default=None,
                    help="score only N honest files (round-robin over producers) instead of the whole corpus")
    ap.add_argument("--small-count", type=int, default=1000, help="files in the small-files group")
    ap.add_argument("--size-gb", type=float, default=2.0, help="size of each large model")
    ap.add_argument("--torch-python", default=_default_torch_python(),
                    help="interpreter with torch for the torch group (and onnx for the onnx group)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per tool and group, seconds")
    ap.add_argument("--jobs", type=int, default=1,
                    help="(tool, group) runs at once; >1 shortens a run on a busy machine, timings then share CPUs")
    ap.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    ap.add_argument("--report-only", action="store_true",
                    help="re-render results.md/png (and RESULTS.md with --update-results) from the last results.json")
    ap.add_argument("--update-results", action="store_true",
                    help="copy the headline table into benchmarks/RESULTS.md (this suite's section)")
    return ap.parse_args(argv)


def _default_torch_python() -> str:
    for cand in (os.environ.get("MODELSEAL_TORCH_PYTHON"), "/work/venv/bin/python", sys.executable):
        if cand and Path(cand).exists():
            return cand
    return sys.executable


def build_groups(args: argparse.Namespace, log) -> list[corpus_mod.Group]:
    names = ALL_GROUPS if args.full else tuple(g.strip() for g in args.groups.split(",") if g.strip())
    unknown = set(names) - set(ALL_GROUPS)
    if unknown:
        raise SystemExit(f"unknown group(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_GROUPS)}")
    size = int(args.size_gb * corpus_mod.GiB)
    groups: list[corpus_mod.Group] = []
    for name in names:
        t0 = time.perf_counter()
        if name == "fixtures":
            g = corpus_mod.fixtures_group(args.corpus, args.fixtures, limit=args.fixtures_limit,
                                          copy=not getattr(args, "report_only", False),
                                          families=tuple(f.strip() for f in getattr(args, "families", "").split(",")
                                                         if f.strip()))
        elif name == "small":
            g = corpus_mod.small_files_group(args.corpus, args.small_count)
        elif name == "safetensors":
            g = corpus_mod.safetensors_group(args.corpus, size)
        elif name == "honest":
            hg = corpus_mod.honest_group(args.honest_corpus, log, sample=getattr(args, "honest_sample", None),
                                         corpus=args.corpus, copy=not getattr(args, "report_only", False))
            if hg is None:
                log("skipping the honest group: the corpus could not be built")
                continue
            g = hg
        elif name == "torch":
            if not _has_module(args.torch_python, "torch"):
                log(f"skipping the torch group: no torch in {args.torch_python}")
                continue
            if corpus_mod.disk_free(args.corpus) < size * 1.2:
                log("skipping the torch group: not enough free disk")
                continue
            g = corpus_mod.torch_group(args.corpus, args.torch_python, size)
        else:
            if not _has_module(args.torch_python, "onnx"):
                log(f"skipping the onnx group: no onnx in {args.torch_python}")
                continue
            g = corpus_mod.onnx_group(args.corpus, args.torch_python, size)
        log(f"corpus group {g.name}: {len(g.labelled)} labelled file(s) ({time.perf_counter() - t0:.1f}s)")
        groups.append(g)
    return groups


def _has_module(python: str, module: str) -> bool:
    r = subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False)
    return r.returncode == 0


def run_all(tools: list[tools_mod.Tool], groups: list[corpus_mod.Group], args: argparse.Namespace,
            log) -> list[RunResult]:
    """Every tool on every group. With --jobs N, N (tool, group) runs at once: each is still measured on its
    own process tree (wall time, wait4 peak RSS), but they share the CPUs."""
    env = tools_mod.tool_env(args.out / "peers-home")
    pairs = [(g, t) for g in groups for t in tools]
    jobs = max(1, getattr(args, "jobs", 1))
    if jobs == 1:
        return [_run_one(t, g, args, env, log) for g, t in pairs]
    from concurrent.futures import ThreadPoolExecutor

    # the slowest tools first, so the pool's tail is short
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][1].name == "modelseal")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {i: pool.submit(_run_one, pairs[i][1], pairs[i][0], args, env, log) for i in order}
        return [futures[i].result() for i in range(len(pairs))]


def _run_one(t: tools_mod.Tool, g: corpus_mod.Group, args: argparse.Namespace, env: dict[str, str],
             log) -> RunResult:
    files = [x.path for x in g.labelled]
    out_file = args.out / "raw" / f"{t.name}-{g.name}.json"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.unlink(missing_ok=True)
    m = run_measured(t.command(g.root, out_file), env=env, timeout=args.timeout, workdir=args.out / "raw")
    (args.out / "raw" / f"{t.name}-{g.name}.stdout").write_text(m.stdout, encoding="utf-8")
    (args.out / "raw" / f"{t.name}-{g.name}.stderr").write_text(m.stderr[-200_000:], encoding="utf-8")
    r = RunResult(t.name, g.name, m.returncode, m.wall_s, m.peak_rss_mb, m.timed_out)
    try:
        if not t.complete(m.stdout, m.stderr, out_file):
            tail = (m.stderr.strip() or m.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"report incomplete (exit {m.returncode}): {tail[0][:200]}")
        statuses = t.parse(m.stdout, out_file, g.root, files)
        r.statuses = {str(p): statuses.get(p, tools_mod.CLEAN) for p in files}
    except Exception as e:  # noqa: BLE001 - a peer's odd output is a result, not a crash
        r.parse_error = f"{type(e).__name__}: {e}"[:300]
        if len(files) > 1 and not m.timed_out:
            # one bad file aborted the whole run: score the tool file by file instead
            log(f"  {t.name:<11} {g.name:<15} folder run gave no usable output ({r.parse_error[:80]}); "
                "running per file")
            _per_file(t, files, r, env, args)
        else:
            r.statuses = {str(p): tools_mod.ERROR for p in files}
    log(f"  {t.name:<11} {g.name:<15} rc={m.returncode:<3} {r.wall_s:8.2f}s {r.peak_rss_mb:8.1f} MB"
        + (" TIMEOUT" if m.timed_out else "") + (" (per file)" if r.mode == "per-file" else "")
        + (f" folder run: {r.parse_error[:120]}" if r.parse_error else ""))
    return r


def _per_file(t: tools_mod.Tool, files: list[Path], r: RunResult, env: dict[str, str],
              args: argparse.Namespace) -> None:
    """Time and score each file on its own; the folder attempt's time is kept in the total."""
    r.mode = "per-file"
    out_file = args.out / "raw" / f"{t.name}-{r.group}-single.json"
    for f in files:
        out_file.unlink(missing_ok=True)
        m = run_measured(t.command(f, out_file), env=env, timeout=min(args.timeout, 600), workdir=args.out / "raw")
        r.wall_s += m.wall_s
        r.peak_rss_mb = max(r.peak_rss_mb, m.peak_rss_mb)
        try:
            if not t.complete(m.stdout, m.stderr, out_file):
                raise RuntimeError("incomplete")
            # a tool given a file reports relative paths against the file's folder
            r.statuses[str(f)] = t.parse(m.stdout, out_file, f.parent, [f]).get(f, tools_mod.CLEAN)
        except Exception:  # noqa: BLE001 - no report for this file: the tool failed on it
            r.statuses[str(f)] = tools_mod.ERROR


# -- summaries ------------------------------------------------------------------------------------------------

def summarize(results: list[RunResult], groups: list[corpus_mod.Group],
              tools: list[tools_mod.Tool]) -> dict[str, dict[str, object]]:
    labels = {str(x.path): x for g in groups for x in g.labelled}
    out: dict[str, dict[str, object]] = {}
    for t in tools:
        mine = [r for r in results if r.tool == t.name]
        hostile = [(p, s) for r in mine for p, s in r.statuses.items() if p in labels and labels[p].kind == "hostile"]
        benign = [(p, s) for r in mine for p, s in r.statuses.items() if p in labels and labels[p].kind == "benign"]
        out[t.name] = {
            "version": t.version,
            "hostile_total": len(hostile),
            "hostile_detected": sum(s == tools_mod.DETECTED for _, s in hostile),
            "hostile_missed": sorted(p for p, s in hostile if s != tools_mod.DETECTED),
            "benign_total": len(benign),
            "benign_flagged": sorted(p for p, s in benign if s == tools_mod.DETECTED),
            "errors": sorted(p for p, s in hostile + benign if s == tools_mod.ERROR),
            "honest_total": sum(1 for r in mine for p in r.statuses if p in labels and labels[p].kind == "honest"),
            "honest_flagged": sorted(p for r in mine for p, s in r.statuses.items()
                                     if p in labels and labels[p].kind == "honest" and s == tools_mod.DETECTED),
            "honest_errors": sum(1 for r in mine for p, s in r.statuses.items()
                                 if p in labels and labels[p].kind == "honest" and s == tools_mod.ERROR),
            "wall_s": sum(r.wall_s for r in mine),
            "peak_rss_mb": max((r.peak_rss_mb for r in mine), default=0.0),
            "per_group": {r.group: {"wall_s": r.wall_s, "peak_rss_mb": r.peak_rss_mb, "rc": r.returncode,
                                    "timed_out": r.timed_out, "parse_error": r.parse_error, "mode": r.mode}
                          for r in mine},
        }
    return out


def _rel(p: str, root: Path) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return p


def render_markdown(summary: dict[str, dict[str, object]], groups: list[corpus_mod.Group],
                    results: list[RunResult], meta: dict[str, str], corpus_root: Path) -> tuple[str, str]:
    """The full results page, and the headline table alone (for RESULTS.md)."""
    base = summary.get("modelseal")
    head = ["| tool | version | hostile detected | hostile missed | benign flagged | errors | wall time (s) "
            "| peak RSS (MB) | time × modelseal | memory × modelseal |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        ratio_t = ratio_m = "–"
        if base and name != "modelseal" and base["wall_s"]:
            ratio_t = f"{s['wall_s'] / base['wall_s']:.1f}×"
            ratio_m = f"{s['peak_rss_mb'] / max(base['peak_rss_mb'], 1e-9):.1f}×"
        elif name == "modelseal":
            ratio_t = ratio_m = "1.0×"
        head.append(f"| {name} | {s['version']} | {s['hostile_detected']}/{s['hostile_total']} "
                    f"| {len(s['hostile_missed'])} | {len(s['benign_flagged'])}/{s['benign_total']} "
                    f"| {len(s['errors'])} | {s['wall_s']:.2f} | {s['peak_rss_mb']:.0f} | {ratio_t} | {ratio_m} |")
    headline = "\n".join(head)
    lines = [f"# modelseal benchmark — {meta['date']}", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ",
             f"Corpus: {', '.join(f'{g.name} ({len(g.labelled)} labelled; {g.note})' for g in groups)}", "",
             "A file counts as *detected* when the tool flags it (modelseal: verdict malicious or suspicious; "
             "ModelAudit: an issue of severity warning or critical; modelscan: any issue; picklescan: a "
             "dangerous import). Files a tool does not scan count as not detected.", "",
             "## Summary", "", headline, "", *target_lines(summary), "", *NOTES, "",
             "## Wall time and peak memory per group", ""]
    tools = list(summary)
    lines.append("| group | files | " + " | ".join(tools) + " |")
    lines.append("|---|---|" + "---|" * len(tools))
    for g in groups:
        cells = []
        for t in tools:
            pg = summary[t]["per_group"].get(g.name)  # type: ignore[union-attr]
            if pg is None:
                cells.append("–")
            else:
                flag = " (timeout)" if pg["timed_out"] else ""
                if pg.get("mode") == "per-file":
                    flag += " (per file†)"
                cells.append(f"{pg['wall_s']:.2f} s / {pg['peak_rss_mb']:.0f} MB{flag}")
        lines.append(f"| {g.name} | {len(g.labelled)} | " + " | ".join(cells) + " |")
    if any(pg.get("mode") == "per-file" for s in summary.values() for pg in s["per_group"].values()):  # type: ignore[union-attr]
        lines += ["", "† the run over the whole folder aborted without a usable report (the tool crashed on one "
                  "file), so the tool was run once per labelled file; the time is the failed folder run plus "
                  "every per-file run (process start included each time)."]
    lines += _honest_tables(summary, groups, tools)
    by_threat = _threat_matrix(results, groups, tools)
    if by_threat:
        lines += ["", "## Hostile fixtures detected, by threat class", "",
                  "| threat | files | " + " | ".join(tools) + " |", "|---|---|" + "---|" * len(tools)]
        for threat, (n, counts) in sorted(by_threat.items()):
            lines.append(f"| {threat} | {n} | " + " | ".join(f"{counts.get(t, 0)}/{n}" for t in tools) + " |")
    by_family = _family_matrix(results, groups, tools)
    if by_family:
        lines += ["", "## Fixtures by format family (the manifest that lists them)", "",
                  "Each cell: hostile detected / hostile, then benign flagged / benign.", "",
                  "| family | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
        for fam, cells in sorted(by_family.items()):
            lines.append(f"| {fam} | " + " | ".join(cells[t] for t in tools) + " |")
    for t, s in summary.items():
        missed = s["hostile_missed"]
        flagged = s["benign_flagged"]
        if missed or flagged:
            lines += ["", f"## {t}: missed and false positives", ""]
            lines += [f"- missed: `{_rel(p, corpus_root)}`" for p in missed[:200]]  # type: ignore[index]
            lines += [f"- flagged benign: `{_rel(p, corpus_root)}`" for p in flagged[:200]]  # type: ignore[index]
    return "\n".join(lines) + "\n", headline


def _honest_tables(summary: dict[str, dict[str, object]], groups: list[corpus_mod.Group],
                   tools: list[str]) -> list[str]:
    """Honest files flagged, per tool and per producer (every flag is a false positive unless argued)."""
    producer = {str(x.path): x.producer for g in groups for x in g.labelled if x.kind == "honest"}
    if not producer or not any(summary[t].get("honest_total") for t in tools):
        return []
    out = ["", "## Honest corpus: files flagged", "",
           "| tool | honest files flagged | not scored (tool error or timeout) |", "|---|---|---|"]
    for t in tools:
        pg = summary[t]["per_group"].get("honest", {})  # type: ignore[union-attr]
        note = " (timeout)" if pg.get("timed_out") else ""
        out.append(f"| {t} | {len(summary[t].get('honest_flagged', []))}/{summary[t].get('honest_total', 0)} "  # type: ignore[arg-type]
                   f"| {summary[t].get('honest_errors', 0)}{note} |")
    per: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for p in producer.values():
        totals[p] = totals.get(p, 0) + 1
    for t in tools:
        for p in summary[t].get("honest_flagged", []):  # type: ignore[union-attr]
            per.setdefault(producer.get(p, "?"), {})[t] = per.setdefault(producer.get(p, "?"), {}).get(t, 0) + 1
    if per:
        out += ["", "| producer | files | " + " | ".join(tools) + " |", "|---|---|" + "---|" * len(tools)]
        for p in sorted(per, key=lambda k: (-max(per[k].values()), k)):
            out.append(f"| {p} | {totals.get(p, 0)} | " + " | ".join(str(per[p].get(t, 0)) for t in tools) + " |")
    return out


def _threat_matrix(results: list[RunResult], groups: list[corpus_mod.Group],
                   tools: list[str]) -> dict[str, tuple[int, dict[str, int]]]:
    labels = {str(x.path): x for g in groups for x in g.labelled if x.kind == "hostile"}
    matrix: dict[str, tuple[int, dict[str, int]]] = {}
    totals: dict[str, int] = {}
    for lab in labels.values():
        totals[lab.threat or "?"] = totals.get(lab.threat or "?", 0) + 1
    for threat, n in totals.items():
        counts: dict[str, int] = {}
        for r in results:
            for p, s in r.statuses.items():
                lab = labels.get(p)
                if lab is not None and (lab.threat or "?") == threat and s == tools_mod.DETECTED:
                    counts[r.tool] = counts.get(r.tool, 0) + 1
        matrix[threat] = (n, counts)
    return matrix


def _family_matrix(results: list[RunResult], groups: list[corpus_mod.Group],
                   tools: list[str]) -> dict[str, dict[str, str]]:
    labels = {str(x.path): x for g in groups for x in g.labelled if x.family}
    counts: dict[str, dict[str, list[int]]] = {}  # family -> tool -> [detected, hostile, flagged, benign]
    for lab in labels.values():
        for t in tools:
            c = counts.setdefault(lab.family, {}).setdefault(t, [0, 0, 0, 0])
            c[1 if lab.kind == "hostile" else 3] += 1
    for r in results:
        for p, st in r.statuses.items():
            lab = labels.get(p)
            if lab is not None and st == tools_mod.DETECTED and r.tool in counts[lab.family]:
                counts[lab.family][r.tool][0 if lab.kind == "hostile" else 2] += 1
    return {fam: {t: (f"{c[0]}/{c[1]}" if c[1] else "–") + " · " + (f"{c[2]}/{c[3]}" if c[3] else "–")
                  for t, c in per.items()} for fam, per in counts.items()}


def draw_chart(results_json: Path, png: Path, log) -> bool:
    """matplotlib lives in the peers venv (or wherever it is installed); drawing runs there."""
    candidates = [tools_mod.peers_bin("python"), Path(sys.executable)]
    for py in candidates:
        if py.exists() and _has_module(str(py), "matplotlib"):
            r = subprocess.run([str(py), str(HERE / "chart.py"), str(results_json), str(png)],
                               capture_output=True, text=True, check=False,
                               env={**os.environ, "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(png.parent / ".mpl")})
            if r.returncode == 0:
                return True
            log(f"chart failed: {r.stderr[-500:]}")
            return False
    log("no matplotlib found: chart skipped (run with --install-peers)")
    return False


def target_lines(summary: dict[str, dict[str, object]]) -> list[str]:
    """The suite's targets, checked: nothing hostile missed, nothing benign flagged, ≥ 10× ModelAudit's speed."""
    me = summary.get("modelseal")
    if not me:
        return []
    out = [f"- hostile files missed by modelseal: {len(me['hostile_missed'])} of {me['hostile_total']} "  # type: ignore[arg-type]
           f"({'met' if not me['hostile_missed'] else 'MISSED'})",
           f"- benign files flagged by modelseal: {len(me['benign_flagged'])} of {me['benign_total']} "  # type: ignore[arg-type]
           f"({'met' if not me['benign_flagged'] else 'MISSED'})"]
    ma = summary.get("modelaudit")
    if ma and me["wall_s"]:
        ratio = ma["wall_s"] / me["wall_s"]  # type: ignore[operator]
        out.append(f"- ModelAudit's wall time over modelseal's on the whole corpus: {ratio:.0f}× "
                   f"(target ≥ 10×: {'met' if ratio >= 10 else 'MISSED'})")
    return out


NOTES = [
    "Notes: the labelled fixtures were written against modelseal's threat list (pickle, torch containers, "
    "NumPy/joblib, Keras/HDF5, ONNX, safetensors, GGUF, archives, and the issue-13 families: TF SavedModel/"
    "GraphDef, TFLite, torch.export `.pt2`, PaddlePaddle, NeMo, dill/cloudpickle, Core ML, PMML, ExecuTorch "
    "`.pte`; per-family counts below the summary in comparison.md); picklescan and modelscan only look at "
    "pickle-based formats, so every other class counts as missed for them. picklescan and modelscan abort the "
    "whole folder run on one hostile fixture (a 7z header, a corrupt deflate stream), so on `fixtures` they "
    "were re-run once per file and their time there includes a process start per file. ModelAudit's "
    "benign flags are its warnings (e.g. non-allowlisted import-only globals in sklearn/torch/transformers "
    "pickles, allowlisted globals \"without trusted loaded impl\"). Each tool runs with its defaults "
    "(modelseal: one worker per core).",
]


def update_results_md(path: Path, headline: str, meta: dict[str, str], summary: dict[str, dict[str, object]]) -> None:
    out = HERE / "out"
    for src, dst in ((out / "results.md", HERE / "comparison.md"), (out / "results.png", HERE / "comparison.png")):
        if src.exists():
            dst.write_bytes(src.read_bytes())
    section = "\n".join([BEGIN, "## Comparison with picklescan, modelscan and ModelAudit (`benchmarks/run.py`)", "",
                         f"Run {meta['date']} on {meta['machine']}:  ", f"`{meta['command']}`", "",
                         headline, "", *target_lines(summary), "", *NOTES, "",
                         "Full tables, per-threat matrix, missed files: [`comparison.md`](comparison.md); chart: "
                         "[`comparison.png`](comparison.png) (copies of `benchmarks/out/results.{md,png}` from "
                         "this run).", "", "![comparison](comparison.png)", END])
    replace_section(path, BEGIN, END, section)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.report_only:
        return _report_only(args, log)
    if args.install_peers:
        tools_mod.install_peers(log)
    tools = tools_mod.available_tools([t.strip() for t in args.tools.split(",") if t.strip()], log)
    groups = build_groups(args, log)
    results = run_all(tools, groups, args, log)
    summary = summarize(results, groups, tools)
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
                       f"{platform.system()} {platform.release()}"}
    (args.out / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "groups": [{"name": g.name, "files": len(g.labelled), "note": g.note}
                                                      for g in groups],
         "runs": [asdict(r) for r in results]}, indent=1), encoding="utf-8")
    md, headline = render_markdown(summary, groups, results, meta, args.corpus)
    (args.out / "results.md").write_text(md, encoding="utf-8")
    if not args.no_chart:
        draw_chart(args.out / "results.json", args.out / "results.png", log)
    if args.update_results:
        update_results_md(HERE / "RESULTS.md", headline, meta, summary)
    log("")
    log(headline)
    log(f"\nwritten: {args.out / 'results.md'}")
    return 0


def _report_only(args: argparse.Namespace, log) -> int:
    doc = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
    names = [g["name"] for g in doc["groups"]]
    args.groups = ",".join(n.split("-")[0] for n in names)  # fixtures, small, safetensors, torch, onnx
    args.full = False
    results = [RunResult(**r) for r in doc["runs"]]
    scored = {p for r in results for p in r.statuses}
    # the labels of the files that run scored (manifests may have grown since)
    groups = [corpus_mod.Group(g.name, g.root, tuple(x for x in g.labelled if str(x.path) in scored), g.note)
              for g in build_groups(args, log) if g.name in names]
    tools = [tools_mod.Tool(n, lambda *_: [], lambda *_: {}, s["version"]) for n, s in doc["summary"].items()]
    summary = summarize(results, groups, tools)
    meta = doc["meta"]
    md, headline = render_markdown(summary, groups, results, meta, args.corpus)
    (args.out / "results.md").write_text(md, encoding="utf-8")
    if not args.no_chart:
        draw_chart(args.out / "results.json", args.out / "results.png", log)
    if args.update_results:
        update_results_md(HERE / "RESULTS.md", headline, meta, summary)
    log(headline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
