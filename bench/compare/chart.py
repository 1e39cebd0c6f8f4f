"""The chart for the README: writes/s and p99 latency against clients, one line per system."""

from __future__ import annotations

from pathlib import Path

from .results import ETCD, ETCD_GATEWAY, Results

# one colour per system; (a) solid, (b) in-process dashed, etcd's gateway dotted
_LINES = [
    ("write_a", "tsconsensus", "tsconsensus, command port", "tab:blue", "-"),
    ("write_b", "tsconsensus", "tsconsensus, in-process", "tab:blue", "--"),
    ("write_a", ETCD, "etcd, gRPC", "tab:green", "-"),
    ("write_a", ETCD_GATEWAY, "etcd, JSON gateway", "tab:green", ":"),
    ("write_a", "pysyncobj", "pysyncobj (non-durable), HTTP front", "tab:orange", "-"),
    ("write_b", "pysyncobj", "pysyncobj (non-durable), in-process", "tab:orange", "--"),
]


def render(results: Results, path: Path, title: str) -> Path:
    """Write the PNG to ``path`` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = list(results.settings["clients"])
    figure, (rate_axes, p99_axes) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    for kind, column, label, colour, style in _LINES:
        rates = [results.get(column, f"{kind}/{c}/rate") for c in clients]
        p99s = [results.get(column, f"{kind}/{c}/p99") for c in clients]
        xs = [c for c, r in zip(clients, rates, strict=True) if r is not None]
        if not xs:
            continue
        kept_rates = [r for r in rates if r is not None]
        kept_p99s = [p for p, r in zip(p99s, rates, strict=True) if r is not None]
        rate_axes.plot(xs, kept_rates, style, color=colour, marker="o", label=label)
        p99_axes.plot(xs, kept_p99s, style, color=colour, marker="o", label=label)
    for axes in (rate_axes, p99_axes):
        axes.set_xscale("log", base=2)
        axes.set_xticks(clients, [str(c) for c in clients])
        axes.set_xlabel("concurrent clients")
        axes.grid(True, which="both", alpha=0.3)
    rate_axes.set_ylabel("writes/s (higher is better)")
    rate_axes.set_ylim(bottom=0)
    p99_axes.set_ylabel("p99 latency, ms (lower is better)")
    p99_axes.set_yscale("log")
    rate_axes.legend(fontsize=8, loc="upper left")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path
