"""The printed table: one Markdown table of every figure, side by side, with ratios to etcd."""

from __future__ import annotations

from .memory import KEYS_PER_REQUEST
from .results import ETCD, ETCD_GATEWAY, Results, Row, rows

NA = "n/a"
TSC = "tsconsensus"
PYSYNCOBJ = "pysyncobj"


def number(value: float | None, unit: str) -> str:
    """A figure as the table writes it (``n/a`` when absent)."""
    if value is None:
        return NA
    if unit in ("rate", "us"):
        return f"{value:,.0f}"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "ms":
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,.1f}"


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or reference == 0:
        return NA
    ratio = value / reference
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.3f}x"


def _header(column: str) -> str:
    return {
        TSC: "tsconsensus",
        ETCD: "etcd",
        ETCD_GATEWAY: "etcd JSON gateway",
        PYSYNCOBJ: "pysyncobj (non-durable)",
    }.get(column, column)


def ratio_columns(results: Results) -> list[tuple[str, str, str]]:
    """(header, system column, reference column) of each ratio column shown."""
    if ETCD not in results.columns and ETCD_GATEWAY not in results.columns:
        return []
    shown = []
    if TSC in results.columns:
        shown.append(("tsc / etcd", TSC, ETCD))
        if ETCD_GATEWAY in results.columns:
            shown.append(("tsc / gateway", TSC, ETCD_GATEWAY))
    if PYSYNCOBJ in results.columns:
        shown.append(("pysyncobj / etcd", PYSYNCOBJ, ETCD))
    return shown


def _ratio_cell(results: Results, row: Row, system: str, reference_column: str) -> str:
    value = results.get(system, row.key)
    reference_key = row.reference or row.key
    if reference_column == ETCD:
        reference = results.etcd_reference(reference_key)
    else:
        reference = results.get(reference_column, reference_key)
    return _ratio(value, reference)


def render(results: Results) -> str:
    """The table as Markdown, with the notes on what each column ran under it."""
    columns = list(results.columns)
    ratios = ratio_columns(results)
    header = ["measurement", *(_header(c) for c in columns), *(r[0] for r in ratios)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" + "---:|" * (len(header) - 1),
    ]
    for row in rows(results.settings):
        cells = [row.label]
        cells += [number(results.get(c, row.key), row.unit) for c in columns]
        cells += [_ratio_cell(results, row, system, ref) for _, system, ref in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    out = ["\n".join(lines), ""]
    out.append(
        "All systems' 3-member clusters run at once and each figure is taken on every system "
        "in turn (an idle member costs about 1% of a core). "
        "(a): N clients in a separate process, one connection each, one request at a time, "
        "spread over the members with the first on the leader; (b): N threads calling the "
        "blocking API inside the leader's process, its ratio against etcd's (a) figure at "
        "the same N. Ratios are system / etcd (above 1: more commands/s, or more ms, MiB). "
        "Members' CPU: the user and system CPU time of all member processes over the "
        "measured interval (from /proc), per completed command: what a command costs the "
        "cluster, which sets the figures when members share cores, as here. "
        "Failover: the leader SIGKILLed (a crash: its connections close) or, for a leader "
        "frozen, SIGSTOPped (no sign but silence, as when its machine goes dark), then a write "
        "every 20 ms through the survivors until one succeeds. "
        f"RSS: VmRSS of the largest member; keys loaded {KEYS_PER_REQUEST} per "
        "request (a tsconsensus `set` of many keys, an etcd txn, one pysyncobj call). 5 members: "
        "one system at a time, a fresh 5-member and a fresh 3-member cluster side by side, "
        "measured in alternation."
    )
    out += [f"- {note}" for note in results.notes]
    for column, errors in results.errors.items():
        shown = ", ".join(f"{key} {n}" for key, n in sorted(errors.items()))
        out.append(f"- failed requests ({_header(column)}): {shown}")
    out += [f"- PROBLEM: {problem}" for problem in results.problems]
    return "\n".join(out)
