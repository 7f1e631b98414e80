"""Training data guards: the generator's held-out split by source video, and settings refused before any work
(a seed the per-rank seeding overflows, a clip size no frame can take, paths given as one string)."""

import numpy as np
import pytest
import torch

from generator import ObjectiveConfig
from videodata.clips import ClipDataConfig
from videotrain.config import RunConfig
from videotrain.generator_data import split_by_source


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


def _tiny_trainer_config(cache, *extra: str):
    from core.config import build_config
    from videotrain.generator_task import GeneratorTrainConfig

    return build_config(GeneratorTrainConfig, [], [
        "model.style=maskgit", "model.orders=[frame,cube]", "model.cube_size=[1,2,2]", "model.vocab_size=100",
        "model.max_grid=[2,4,4]", "model.dim=16", "model.depth=1", "model.num_heads=2", "model.num_classes=3",
        "optim.warmup_steps=0", "run.micro_batch=2", "run.steps=4", "run.checkpoint_every=0", f"data.cache={cache}",
        *extra,
    ])  # fmt: skip


def test_an_objective_order_that_cannot_cut_the_caches_grid_is_refused_at_build(tmp_path):
    """max_grid [2,4,4] takes 1x2x2 cubes but the cache's (2,3,3) grid does not: the run built and trained, and died
    at whichever step first drew the cube order (step 27 in the reviewer's run)."""
    from tests.unit.test_token_data import make_cache
    from videotrain.engines import restored_env
    from videotrain.generator_task import GeneratorTrainer

    make_cache(tmp_path / "cache", num_clips=8, shard_size=8)  # grid (2, 3, 3)
    cfg = _tiny_trainer_config(tmp_path / "cache", "objective.orders=[frame,frame,cube]")
    with restored_env(), pytest.raises(ValueError, match=r"objective order 'cube' cannot train on the cache's token"):
        GeneratorTrainer(cfg, tmp_path / "run")


def test_the_held_out_loss_is_the_negative_log_likelihood_without_label_smoothing(tmp_path, monkeypatch):
    """eval_logs turned off condition dropout but kept label smoothing: at 0.1 a perfect predictor read 5.0."""
    from tests.unit.test_token_data import make_cache
    from videotrain import generator_task
    from videotrain.engines import restored_env

    make_cache(tmp_path / "cache", num_clips=8, shard_size=8)
    cfg = _tiny_trainer_config(tmp_path / "cache", "model.orders=[frame]", "model.max_grid=[2,3,3]",
                               "objective.label_smoothing=0.1", "data.eval_fraction=0.25")  # fmt: skip
    seen = []
    real = generator_task.generator_loss

    def spy(model, ids, cond, objective, generator):
        seen.append(objective)
        return real(model, ids, cond, objective, generator)

    with restored_env():
        trainer = generator_task.GeneratorTrainer(cfg, tmp_path / "run")
        monkeypatch.setattr(generator_task, "generator_loss", spy)
        logs = trainer.eval_logs()
    assert np.isfinite(logs["eval_loss"]) and seen
    assert all(o.label_smoothing == 0.0 and o.cond_dropout == 0.0 for o in seen)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_generator_loss_takes_any_integer_ids(dtype):
    """int32 or int16 ids passed the dtype check, then failed inside torch (cross_entropy, the embedding)."""
    from generator import Condition, generator_loss
    from tests.helpers.tiny_generator import GRID as GEN_GRID
    from tests.helpers.tiny_generator import tiny

    for style in ("ar", "maskgit"):
        m = tiny(style)
        ids = torch.randint(0, 64, (2, *GEN_GRID))
        want = generator_loss(m, ids, Condition(labels=torch.tensor([1, 2])), ObjectiveConfig(),
                              torch.Generator().manual_seed(0)).loss  # fmt: skip
        got = generator_loss(m, ids.to(dtype), Condition(labels=torch.tensor([1, 2])), ObjectiveConfig(),
                             torch.Generator().manual_seed(0)).loss  # fmt: skip
        assert torch.equal(got, want)
