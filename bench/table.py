"""The benchmark table: one row per record, printed by every bench script and by ``bench/run.py``.

A record is a dict with ``name``, ``ours``, ``peer``, ``unit``, ``ratio`` (ours/peer), ``goal``
(text such as ``">= 1"``, or a number with its direction in ``goal_op``, ``">="`` by default),
``met`` (True, False or None) and optionally ``note``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.files import atomic_write_text, check_file_target
from core.tables import format_number, is_number, records_table

MET = {True: "yes", False: "NO", None: "-"}


def record(name: str, ours: float, peer: float, unit: str, goal: float | None, goal_op: str = ">=") -> dict:
    """One metric, ratio = ours / peer; ``goal_op`` says which way the goal points ("<=" for time-like ratios)."""
    ratio = ours / peer if peer else float("nan")
    met = None if goal is None else (ratio >= goal if goal_op == ">=" else ratio <= goal)
    return {
        "name": name,
        "ours": ours,
        "peer": peer,
        "unit": unit,
        "ratio": ratio,
        "goal": goal,
        "met": met,
        "goal_op": goal_op,
    }


def write_json(path: str | Path, payload: dict) -> None:
    """A bench script's ``--json`` output: its records and details (non-JSON values as text)."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")  # a failed dump keeps the old file


def check_json_target(path: str | Path | None, model: str | Path | None = None) -> None:
    """Before a benchmark runs (minutes): ValueError when ``--json`` cannot become a file, or lies in ``--model``'s
    folder, whose files it would replace (``--json MODEL/pipeline.yaml`` wrote the results over the model's
    config). None passes."""
    if path is None:
        return
    check_file_target(path, "--json")
    if model is not None and Path(model).resolve() in Path(path).resolve().parents:
        raise ValueError(f"--json {str(path)!r} lies in --model {str(model)!r}: give a path outside the model")


def goal_text(record: Mapping[str, Any]) -> str:
    """The goal with its direction: ``{"goal": 1.0, "goal_op": "<="}`` -> ``"<= 1"``; ``"-"`` for none."""
    goal = record.get("goal")
    if is_number(goal):
        return f"{record.get('goal_op', '>=')} {goal:g}"
    return goal or "-"


def format_table(records: list[dict], *, first: str = "benchmark", notes: bool = False) -> str:
    """The records as a Markdown table: ``first`` (name), ours, peer/floor, unit, ratio, goal, met (and note)."""
    columns = [
        (first, "name"),
        ("ours", "ours"),
        ("peer/floor", "peer"),
        ("unit", lambda r: r.get("unit") or ""),
        ("ratio", lambda r: format_number(r.get("ratio"))),
        ("goal", goal_text),
        ("met", lambda r: MET[r.get("met")]),
    ]
    if notes:
        columns.append(("note", lambda r: r.get("note") or ""))
    return records_table(records, columns)
