"""The prompt-adherence protocol's plan: every class and every direction cycles through every fresh phrasing, rows
say when they do not cover the classes evenly, and a results.json with non-finite numbers is refused by the report."""

import json
from collections import Counter

import numpy as np
import pytest

from videodata.shapes.render import NUM_CLASSES, label_of
from videoeval.adherence import plan
from videoeval.phrasings import FRESH_TEMPLATES, fresh_caption
from videoeval.report import load_adherence
from videoeval.shapes_scoring import coverage, split_label


def test_each_held_out_class_sees_every_fresh_phrasing():
    """With 3 held-out combinations the index i // 3 + i moved by 4 per visit: each class saw 4 of the 16
    templates, and templates 3, 7, 11 and 15 were never used."""
    held = [
        label_of("green", "triangle", "up"),
        label_of("blue", "circle", "left"),
        label_of("magenta", "square", "down"),
    ]
    rows = plan(48, seed=1, labels=held)
    assert Counter((r["color"], r["shape"], r["motion"]) for r in rows) == {
        ("green", "triangle", "up"): 16, ("blue", "circle", "left"): 16, ("magenta", "square", "down"): 16
    }  # fmt: skip
    for combination in {(r["color"], r["shape"], r["motion"]) for r in rows}:  # 16 templates: 16 distinct captions
        assert len({r["caption"] for r in rows if (r["color"], r["shape"], r["motion"]) == combination}) == 16


def template_of(caption: str) -> int:
    """Which fresh template a caption came from (the one whose fixed words it contains, longest first)."""
    fixed = [[w for w in t.replace(",", " ").split() if "{" not in w] for t in FRESH_TEMPLATES]
    words = caption.replace(",", " ").split()
    fits = [i for i, f in enumerate(fixed) if all(w in words for w in f)]
    return max(fits, key=lambda i: len(fixed[i]))


def test_every_template_meets_every_direction_and_every_class_varies_its_templates():
    """The phrasing index followed the video's position (i + i // 72): with the direction at label % 4, each template
    met 3 of the 4 directions in the 216 reporting videos ("climbs" never went left) and 2 in the 144 of a selection
    run, whatever the seed."""
    rng = np.random.default_rng(0)
    assert all(template_of(fresh_caption(label, i, rng)) == i for i in range(16) for label in range(NUM_CLASSES))
    for n, least in ((216, 3), (144, 2)):
        rows = plan(n, seed=20_261_202)
        pairs = Counter((template_of(r["caption"]), r["motion"]) for r in rows)
        assert len(pairs) == len(FRESH_TEMPLATES) * 4 and min(pairs.values()) >= least  # 64 pairs, near-even
        for label in range(NUM_CLASSES):  # a class's videos: each with another template
            templates = [template_of(r["caption"]) for r in rows[label::NUM_CLASSES]]
            assert len(set(templates)) == len(templates)
    assert Counter(r["caption"] for r in plan(216, seed=20_261_202)).most_common(1)[0][1] <= 3


def test_rows_that_do_not_cover_the_classes_evenly_say_so():
    assert coverage(216) == {"classes": 72.0, "class_total": 72.0, "balanced": 1.0}
    assert coverage(36) == {"classes": 36.0, "class_total": 72.0, "balanced": 0.0}  # red, yellow and green only
    # the held-out row covers its own combinations: 48 videos of 5 are 9/9/10/10/10, and 2 reach 2 of them
    assert split_label("held-out", coverage(48, 5)) == "held-out: 5 of 5 classes, unbalanced"
    assert split_label("held-out", coverage(2, 5)) == "held-out: 2 of 5 classes, unbalanced"
    assert split_label("held-out", coverage(45, 5)) == "held-out"
    assert {r["color"] for r in plan(36, seed=1)} == {"red", "yellow", "green"}


@pytest.mark.parametrize(("n", "all_three"), [("Infinity", 0.5), (3, "NaN"), (2.5, 0.5), (-1, 0.5)])
def test_the_report_refuses_non_finite_or_fractional_numbers(tmp_path, n, all_three):
    """Infinity passed the check and crashed the page (OverflowError traceback) after all the sampling."""
    row = {"n": n, "all": all_three, "color": 1.0, "shape": 1.0, "motion": 1.0}
    text = (
        json.dumps({"summary": {"ar/frame/all-classes": row}}).replace('"Infinity"', "Infinity").replace('"NaN"', "NaN")
    )
    (tmp_path / "r.json").write_text(text)
    with pytest.raises(ValueError, match="finite numbers"):
        load_adherence(tmp_path / "r.json")


def test_the_html_report_flags_an_unbalanced_row_as_the_markdown_does():
    """report.md said "36 of 72 classes, unbalanced" while report.html called the same row "all-classes"."""
    from videoeval.report_html import adherence_html

    row = {"n": 36, "all": 0.9, "color": 1.0, "shape": 1.0, "motion": 0.9}
    page = adherence_html({"summary": {"ar/frame/all-classes": {**row, **coverage(36)},
                                       "ar/frame/held-out": {**row, **coverage(36, 3)}}})  # fmt: skip
    assert "all-classes: 36 of 72 classes, unbalanced" in page and "<td>held-out</td>" in page
