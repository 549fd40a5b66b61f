"""Draws the PNG plots of docs/benchmarks.md from a run that `xmem bench --json FILE` wrote.

    python scripts/bench_plots.py RUN.json OUTDIR

Writes OUTDIR/streams-latency.png (one-way latency p50 and p99 per message, each transport
side by side, log scale) and OUTDIR/streams-throughput.png (messages per second, with the
memset bound of the same run). Each title names the machine, the date and the peers, since a
figure means nothing without them.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"xmem": "#1f77b4", "iceoryx2": "#ff7f0e", "unix-socket": "#7f7f7f", "floor": "#2ca02c"}


def ratio(r):
    """A ratio with two significant digits (0.00035×, 0.33×, 2.3×, 1100×)."""
    return f"{r:.2g}×" if r < 10 else f"{r:.0f}×"


def subtitle(run):
    m = run["machine"]
    peers = ", ".join(t for t in run["transports"] if t != "xmem") or "none"
    return (
        f"{m['cpu']}, {m['logical_cpus']} CPUs, Linux {m['kernel']}; {run['date']}\n"
        f"two processes pinned to CPUs {run['pinned_cpus']}; peers in the same run: {peers}"
    )


def grouped(ax, labels, series, log=True):
    """Bars of every transport per label; returns each bar's x, per transport."""
    n = len(series)
    width = 0.8 / max(n, 1)
    xs = {}
    for i, (name, values) in enumerate(series.items()):
        x = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        heights = [v if v else 0 for v in values]
        ax.bar(x, heights, width, label=name, color=COLOURS.get(name))
        xs[name] = x
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    return xs


def latency(run, out):
    rows = run["latency_ns"]
    if not rows:
        return None
    labels = [r["message"] for r in rows]
    names = run["transports"]
    p50 = {t: [r["results"][i]["p50"] for r in rows] for i, t in enumerate(names)}
    p99 = {t: [r["results"][i]["p99"] for r in rows] for i, t in enumerate(names)}
    fig, ax = plt.subplots(figsize=(9, 4.8))
    xs = grouped(ax, labels, p50)
    for t in names:
        pts = [(x, v) for x, v in zip(xs[t], p99[t]) if v]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="_", s=200, color="black")
    for j, r in enumerate(rows):
        base = r["results"][0]["p50"]
        for i, t in enumerate(names[1:], start=1):
            other = r["results"][i]["p50"]
            if base and other:
                top = max(other, r["results"][i]["p99"] or 0) * 1.15
                ax.annotate(ratio(base / other), (xs[t][j], top), ha="center", va="bottom",
                            fontsize=7)
    ax.set_ylabel("one-way latency, ns (bar p50, dash p99)")
    ax.set_title("xmem streams: latency (ratios: xmem p50 ÷ peer p50)\n" + subtitle(run), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "streams-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(run, out):
    rows = run["throughput_per_s"]
    if not rows:
        return None
    labels = [r["message"] for r in rows]
    names = run["transports"]
    rates = {t: [r["rates"][i]["messages_per_s"] for r in rows] for i, t in enumerate(names)}
    fig, ax = plt.subplots(figsize=(9, 4.8))
    xs = grouped(ax, labels, rates)
    for j, r in enumerate(rows):
        if r["memset_bound_per_s"]:
            ax.hlines(r["memset_bound_per_s"], j - 0.45, j + 0.45, colors="red", linestyles="dashed",
                      label="memset bound, same run" if j == len(rows) - 1 else None)
        base = r["rates"][0]["messages_per_s"]
        for i, t in enumerate(names[1:], start=1):
            other = r["rates"][i]["messages_per_s"]
            if base and other:
                ax.annotate(ratio(base / other), (xs[t][j], other * 1.1), ha="center",
                            va="bottom", fontsize=7)
    ax.set_ylabel("messages per second (nothing dropped)")
    ax.set_title("xmem streams: throughput (ratios: xmem ÷ peer)\n" + subtitle(run), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "streams-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bench_plots.py RUN.json OUTDIR")
    run = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for path in (latency(run, out), throughput(run, out)):
        if path:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
