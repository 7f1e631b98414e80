"""Tables of results as text: one Markdown table layout and one number format for every CLI and benchmark.

A table printed by ``bench/run.py``, ``tools/eval_tokenizer.py`` or ``tools/eval_video.py`` is a
padded GitHub-Markdown pipe table, so it reads well in a terminal and pastes into a README::

    | benchmark | ours | peer | met |
    |-----------|-----:|-----:|-----|
    | encode    |  123 | 61.7 | yes |

Pure Python (no torch, no numpy): the benchmark venv imports it too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

MISSING = "-"  # what a table shows for a value that was not measured (None)


def is_number(value: Any) -> bool:
    """True for an int or float, False for bools (which are ints in Python) and everything else."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_number(value: Any, digits: int = 3) -> str:
    """A value as table text: ``None`` -> ``"-"``, a float to ``digits`` significant digits, else ``str``.

    Floats of 1000 or more are written whole with thousands separators (``12,345``), so large
    throughputs keep their integer digits.

    Examples:
        >>> [format_number(v) for v in (None, 123.4, 61.7, 2.0, 0.01234, 12345.6, 999.7, 7, "x")]
        ['-', '123', '61.7', '2', '0.0123', '12,346', '1,000', '7', 'x']
    """
    if value is None:
        return MISSING
    if isinstance(value, float):
        text = f"{value:.{digits}g}"  # judged after rounding: 999.7 rounds to 1e+03
        return text if abs(float(text)) < 1000 else f"{value:,.0f}"
    return str(value)


def looks_numeric(text: Any) -> bool:
    """A number, or text that shows one (``"12.5%"``, ``"1,234"``, ``"2.0x"``): such cells align right."""
    if is_number(text):
        return True
    try:
        float(str(text).strip().rstrip("%x").replace(",", ""))
    except ValueError:
        return False
    return True


def format_table(head: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None) -> str:
    """A padded Markdown pipe table.

    Args:
        head: column titles.
        rows: one sequence of cells per row, each as long as ``head``. Cells that are not
            strings go through :func:`format_number`.
        align: one letter per column, ``l`` or ``r``. By default a column is right-aligned when
            every cell in it shows a number (or ``"-"``) and at least one is not ``"-"``.

    Returns:
        The table, one line per row after the title and separator lines, without a final newline.

    Raises:
        ValueError: a row whose length differs from ``head``'s, or an ``align`` of the wrong length.
    """
    cells = [[_cell(c if isinstance(c, str) else format_number(c)) for c in row] for row in rows]
    head = [_cell(h) for h in head]
    for i, row in enumerate(cells):
        if len(row) != len(head):
            raise ValueError(f"table row {i} has {len(row)} cells for {len(head)} columns")
    if align is None:
        columns = [[row[j] for row in cells] for j in range(len(head))]
        align = "".join("r" if _numeric_column(col) else "l" for col in columns)
    if len(align) != len(head) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one of 'l'/'r' per column ({len(head)}), got {align!r}")
    widths = [max(3, len(h), *(len(row[j]) for row in cells)) for j, h in enumerate(head)]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if a == "r" else "-" * (w + 2) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(list(head)), rule, *map(line, cells)])


def _cell(text: str) -> str:
    """A cell's text with ``|`` escaped and line breaks as spaces: a file name holding either split its row."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _numeric_column(cells: Sequence[str]) -> bool:
    """Every cell shows a number or ``"-"``, and at least one shows a number."""
    return all(c == MISSING or looks_numeric(c) for c in cells) and any(c != MISSING for c in cells)


Column = tuple[str, str | Callable[[Mapping[str, Any]], Any]]


def records_table(records: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, align: str | None = None) -> str:
    """:func:`format_table` of dict records: each column is ``(title, key)`` or ``(title, record -> cell)``.

    A missing key shows as ``"-"``.
    """
    rows = [[get(r) if callable(get) else r.get(get) for _, get in columns] for r in records]
    return format_table([title for title, _ in columns], rows, align=align)
