"""Small checks shared by the library's argument validation."""

from __future__ import annotations

import numbers
import unicodedata


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


def has_text(text: str) -> bool:
    """Whether ``text`` holds anything a text encoder reads: characters other than whitespace, separators, control
    and format characters (zero-width spaces, BOMs) and lone combining marks, which BERT-style tokenizers drop.
    ``"   "`` or ``"\u200b"`` passes ``str.strip()`` or ``bool()`` checks and then leaves a prompt with no tokens."""
    return any(not ch.isspace() and unicodedata.category(ch)[0] not in "CZ" and unicodedata.category(ch) != "Mn"
               for ch in text)  # fmt: skip


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: what an error line shows
    of a library's multi-line message (a torch or FFmpeg dump)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def shown(text: str, limit: int = 60) -> str:
    """``repr(text)`` for an error line, cut to about ``limit`` characters with the full length given: a 60 KB prompt
    of emoji was echoed whole in its one-line refusal."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch running out of memory: its CPU allocator's RuntimeError ("can't allocate memory") or
    CUDA's ``torch.OutOfMemoryError`` (a RuntimeError too; matched by name, so no torch import here)."""
    return isinstance(err, RuntimeError) and (
        type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(err)
    )
