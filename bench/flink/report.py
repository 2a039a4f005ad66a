#!/usr/bin/env python3
"""Summarises bench/flink runs: one line per run in RAW (CSV written by run.sh) becomes one
row per (query, parallelism, state, engine) with the median and the spread (min-max) of
events/s and events per CPU-second, and the Sluice/Flink ratios of the medians.

    report.py RAW.csv OUT_DIR      # prints the table, writes OUT_DIR/nexmark.csv,
                                   # OUT_DIR/nexmark.md and OUT_DIR/nexmark.png
"""
import csv
import os
import statistics
import sys

ENGINE_ORDER = ["sluice", "flink", "flink-std"]


def human(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.0f}k"
    return f"{x:.0f}"


def summarise(raw_path):
    groups = {}
    order = []
    with open(raw_path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["query"], r["parallelism"], r["state"], r["engine"])
            if key not in groups:
                groups[key] = []
                order.append(key)
            events, secs, cpu = int(r["events"]), float(r["seconds"]), float(r["cpu_seconds"])
            groups[key].append((events, events / secs, events / cpu))
    rows = []
    for key in order:
        runs = groups[key]
        rate = [r[1] for r in runs]
        per_cpu = [r[2] for r in runs]
        rows.append({
            "query": key[0], "parallelism": key[1], "state": key[2], "engine": key[3],
            "events": runs[0][0], "runs": len(runs),
            "events_per_s": statistics.median(rate), "events_per_s_min": min(rate),
            "events_per_s_max": max(rate),
            "events_per_cpu_s": statistics.median(per_cpu), "events_per_cpu_s_min": min(per_cpu),
            "events_per_cpu_s_max": max(per_cpu),
        })
    # Ratios on the Flink rows: the Sluice row of the same query, parallelism and state
    # over this one.
    sluice = {(r["query"], r["parallelism"], r["state"]): r for r in rows if r["engine"] == "sluice"}
    for r in rows:
        s = sluice.get((r["query"], r["parallelism"], r["state"]))
        if r["engine"] != "sluice" and s:
            r["ratio_events_per_s"] = s["events_per_s"] / r["events_per_s"]
            r["ratio_events_per_cpu_s"] = s["events_per_cpu_s"] / r["events_per_cpu_s"]
    rows.sort(key=lambda r: (r["query"], int(r["parallelism"]), r["state"],
                             ENGINE_ORDER.index(r["engine"]) if r["engine"] in ENGINE_ORDER else 9))
    return rows


def spread(r, field):
    return f"{human(r[field])} ({human(r[field + '_min'])}–{human(r[field + '_max'])})"


def table(rows):
    """A Markdown table; it reads as plain text on a terminal too."""
    head = ["query", "par", "state", "engine", "events", "events/s median (min–max)",
            "events/CPU-s median (min–max)", "Sluice/Flink events/s", "Sluice/Flink events/CPU-s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        ratio = lambda k: f"{r[k]:.2f}×" if k in r else ""
        lines.append("| " + " | ".join([
            r["query"], r["parallelism"], r["state"], r["engine"], human(r["events"]),
            spread(r, "events_per_s"), spread(r, "events_per_cpu_s"),
            ratio("ratio_events_per_s"), ratio("ratio_events_per_cpu_s")]) + " |")
    if any(r["engine"] == "flink-std" for r in rows):
        lines.append("")
        lines.append("q7 on Flink: `flink` keeps only each window's highest bids in one pass, as "
                     "Sluice does; `flink-std` is the standard shape, the window's highest price "
                     "joined back with all of the window's bids.")
    return "\n".join(lines)


def write_csv(rows, path):
    fields = ["query", "parallelism", "state", "engine", "events", "runs",
              "events_per_s", "events_per_s_min", "events_per_s_max",
              "events_per_cpu_s", "events_per_cpu_s_min", "events_per_cpu_s_max",
              "ratio_events_per_s", "ratio_events_per_cpu_s"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.0f}" if isinstance(r.get(k), float) and not k.startswith("ratio")
                            else f"{r[k]:.3f}" if isinstance(r.get(k), float) else r.get(k, ""))
                        for k in fields})


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = []
    for r in rows:
        g = (r["query"], r["parallelism"], r["state"])
        if g not in groups:
            groups.append(g)
    engines = [e for e in ENGINE_ORDER if any(r["engine"] == e for r in rows)]
    colours = {"sluice": "#d9541a", "flink": "#3b6fb6", "flink-std": "#9db7dd"}
    by_key = {(r["query"], r["parallelism"], r["state"], r["engine"]): r for r in rows}
    width = 0.8 / len(engines)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(groups) + 2), 8), sharex=True)
    for ax, field, label in [(axes[0], "events_per_s", "events/s"),
                             (axes[1], "events_per_cpu_s", "events per CPU-second")]:
        for i, e in enumerate(engines):
            xs, ys, lo, hi = [], [], [], []
            for x, g in enumerate(groups):
                r = by_key.get(g + (e,))
                if r:
                    xs.append(x + (i - (len(engines) - 1) / 2) * width)
                    ys.append(r[field])
                    lo.append(r[field] - r[field + "_min"])
                    hi.append(r[field + "_max"] - r[field])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=e, color=colours.get(e))
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend()
    axes[0].set_title("Nexmark: Sluice and Flink (median of runs; bars show min–max)")
    axes[1].set_xticks(range(len(groups)))
    axes[1].set_xticklabels([f"{q} p{p}\n{s}" for q, p, s in groups], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    raw, out = sys.argv[1], sys.argv[2]
    rows = summarise(raw)
    text = table(rows)
    print(text)
    write_csv(rows, os.path.join(out, "nexmark.csv"))
    with open(os.path.join(out, "nexmark.md"), "w") as f:
        f.write(text + "\n")
    try:
        chart(rows, os.path.join(out, "nexmark.png"))
    except ImportError:
        print("matplotlib is missing: no chart written", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
