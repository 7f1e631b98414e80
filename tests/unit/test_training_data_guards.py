"""Training data guards: the generator's held-out split by source video, and settings refused before any work
(a seed the per-rank seeding overflows, a clip size no frame can take, paths given as one string)."""

import numpy as np
import pytest

from videodata.clips import ClipDataConfig
from videotrain.config import RunConfig
from videotrain.generator_task import split_by_source


def test_held_out_clips_share_no_source_video_with_training_clips():
    """Clips were held out one by one: with two clips per video (starts 0 and 3 of 20 frames, 14 of 17 frames
    shared) 6 of the 7 held-out videos also gave training clips, and the eval loss measured memorised frames."""
    sources = np.repeat(np.arange(16), 2)  # (32,) two clips per source, in cache order
    for seed in range(5):
        eval_idx, train_idx = split_by_source(sources, 0.25, seed)
        assert not set(sources[eval_idx]) & set(sources[train_idx])
        assert len(eval_idx) == 8 and sorted([*eval_idx, *train_idx]) == list(range(32))


def test_with_one_clip_per_source_the_split_is_the_clip_wise_one():
    """The shapes cache has one clip per source (quarantined sources leave gaps): the split is unchanged."""
    sources = np.array([0, 1, 2, 4, 5, 6, 9, 10, 11, 12, 13, 15, 16, 17, 18, 20, 21, 22, 23, 24])
    n = len(sources)
    for seed, fraction in ((0, 0.02), (3, 0.25), (7, 0.5)):
        perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 7]))).permutation(n)
        n_eval = min(n - 1, int(round(fraction * n)))
        eval_idx, train_idx = split_by_source(sources, fraction, seed)
        assert eval_idx.tolist() == sorted(perm[:n_eval]) and train_idx.tolist() == sorted(perm[n_eval:])


def test_a_single_source_video_is_all_training_data():
    eval_idx, train_idx = split_by_source(np.zeros(6, np.int64), 0.5, 0)
    assert eval_idx.size == 0 and train_idx.tolist() == list(range(6))
    assert split_by_source(np.arange(4), 0.0, 0)[0].size == 0


def test_a_seed_the_per_rank_seeding_overflows_is_refused_at_once():
    """run.seed=2**62 passed the config and stopped the generator trainer after its setup, at
    manual_seed(seed * 1000 + rank), with "Overflow when unpacking long long"."""
    RunConfig(seed=2**53 - 1)
    with pytest.raises(ValueError, match=r"run.seed must be < 2\*\*53, got 4611686018427387904"):
        RunConfig(seed=2**62)


def test_clip_data_refuses_one_string_of_paths_and_a_size_no_frame_can_take():
    """A string was read letter by letter (the first path "/", scanned whole); data.size=100000 asked for a
    100000x100000 frame per file."""
    with pytest.raises(ValueError, match=r"data.paths must be a list of paths, got the single str '/data/videos'"):
        ClipDataConfig(paths="/data/videos")
    with pytest.raises(ValueError, match="data.size 100000 is larger than 4096 px a side"):
        ClipDataConfig(paths=("x",), size=100000)
    ClipDataConfig(paths=("x",), size=4096)
