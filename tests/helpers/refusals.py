"""One assertion shared by the config tests: a bad setting is refused with exactly its message."""

from __future__ import annotations

import pytest


def refused_exactly(cfg_cls: type, bad: dict[str, dict]) -> None:
    """Each keyword set of ``bad`` raises ValueError with exactly its key (a regex) as the message."""
    for message, kw in bad.items():
        with pytest.raises(ValueError, match=f"^{message}$"):
            cfg_cls(**kw)
