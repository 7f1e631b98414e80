"""Small checks shared by the library's argument validation."""

from __future__ import annotations

import numbers


def is_int(x: object) -> bool:
    """An integer, NumPy's included (``np.int64(9)``); not a bool, and not a float such as 4.0."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_text(text: str, what: str) -> None:
    """ValueError unless ``text`` is valid Unicode: a lone surrogate (JSON ``"\\ud800"``, or a byte that is not UTF-8
    in a command line, which Python keeps as one) passed every check and then failed inside a tokenizer with a
    TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{what} is not valid Unicode text (character {err.start}: {text[err.start]!r})") from None
