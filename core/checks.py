"""Small checks shared by the library's argument validation."""

from __future__ import annotations

import numbers


def is_int(x: object) -> bool:
    """An integer, NumPy's included (``np.int64(9)``); not a bool, and not a float such as 4.0."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)
