"""The planted-bug harness (``tests/helpers/planted_bugs.py``, ``tests/MUTATION.md``) replaces exact texts of the
code; a refactor that changes one of them turned the whole harness off (3 of 25 had gone stale: it stopped with a
traceback at the first, after minutes of tests). Each text must occur exactly once, so such a change fails here."""

from __future__ import annotations

import pytest

from tests.helpers.planted_bugs import BUGS, ROOT, stale


@pytest.mark.parametrize("bug", BUGS, ids=[b.name for b in BUGS])
def test_every_planted_bug_still_applies_to_the_code(bug):
    assert stale(ROOT, bug) is None
    assert bug.new != bug.old and all((ROOT / t).is_file() for t in bug.tests)
