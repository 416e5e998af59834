"""Draw benchmarks/out/results.png from results.json (run by run.py with an interpreter that has matplotlib)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results_json: str, png: str) -> None:
    doc = json.loads(Path(results_json).read_text(encoding="utf-8"))
    summary = doc["summary"]
    tools = list(summary)
    groups = [g["name"] for g in doc["groups"]]
    fig, (ax_t, ax_m, ax_d) = plt.subplots(1, 3, figsize=(17, 5.5))
    width = 0.8 / max(len(tools), 1)
    for i, t in enumerate(tools):
        walls = [summary[t]["per_group"].get(g, {}).get("wall_s", 0) for g in groups]
        mems = [summary[t]["per_group"].get(g, {}).get("peak_rss_mb", 0) for g in groups]
        xs = [k + i * width for k in range(len(groups))]
        ax_t.bar(xs, walls, width, label=t)
        ax_m.bar(xs, mems, width, label=t)
    for ax, title, unit in ((ax_t, "wall time per corpus group", "seconds (log)"),
                            (ax_m, "peak memory per corpus group", "MB")):
        ax.set_xticks([k + width * (len(tools) - 1) / 2 for k in range(len(groups))], groups, rotation=15)
        if ax is ax_t:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
    det = [summary[t]["hostile_detected"] for t in tools]
    missed = [len(summary[t]["hostile_missed"]) for t in tools]
    fps = [len(summary[t]["benign_flagged"]) for t in tools]
    xs = range(len(tools))
    ax_d.bar([x - 0.27 for x in xs], det, 0.27, label="hostile detected", color="#2da44e")
    ax_d.bar(list(xs), missed, 0.27, label="hostile missed", color="#cf222e")
    ax_d.bar([x + 0.27 for x in xs], fps, 0.27, label="benign flagged", color="#bf8700")
    ax_d.set_xticks(list(xs), tools)
    ax_d.set_title("detection on the labelled corpus")
    ax_d.legend(fontsize=8)
    fig.suptitle(f"modelseal benchmark — {doc['meta']['date']}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
