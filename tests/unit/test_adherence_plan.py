"""The prompt-adherence protocol's plan: every class cycles through every fresh phrasing, rows say when they do not
cover the classes evenly, and a results.json with non-finite numbers is refused by the report."""

import json
from collections import Counter

import pytest

from videodata.shapes.render import NUM_CLASSES, label_of
from videoeval.adherence import plan, template_stride
from videoeval.phrasings import FRESH_TEMPLATES
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
    assert template_stride(3) == 5 and template_stride(1) == 3
    for n in (1, 2, 3, 15, NUM_CLASSES):
        stride = template_stride(n)
        for j in range(n):  # class j's phrasing indices over 16 visits hit every template once
            assert {(j + k * stride) % len(FRESH_TEMPLATES) for k in range(len(FRESH_TEMPLATES))} == set(range(16))


def test_the_all_classes_plan_is_unchanged():
    """For the 72 classes the stride is 73, the old i // 72 + i: the published all-classes rows stay reproducible."""
    assert template_stride(NUM_CLASSES) == NUM_CLASSES + 1
    rows = plan(216, seed=20_261_202)
    assert Counter(r["caption"] for r in rows).most_common(1)[0][1] <= 3


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
