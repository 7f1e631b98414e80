"""The per-benchmark table printed by the bench scripts (bench/run.py prints the combined one)."""

from __future__ import annotations


def format_table(records: list[dict]) -> str:
    """One row per record: metric, ours, peer, unit, ours/peer, goal (with its direction), met."""

    def num(x: float) -> str:
        return f"{x:,.3f}" if abs(x) < 10 else f"{x:,.1f}"

    rows = [("metric", "ours", "peer", "unit", "ours/peer", "goal", "met")]
    for r in records:
        goal = f"{r.get('goal_op', '>=')} {r['goal']:.2f}x" if r["goal"] is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        rows.append((r["name"], num(r["ours"]), num(r["peer"]), r["unit"], f"{r['ratio']:.3f}x", goal, met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
