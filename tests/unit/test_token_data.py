"""videodata/cache/reader.py: random access into a token cache, expectations, and resumable shuffling."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from videodata.cache.decode import ClipWindow, plan_starts
from videodata.cache.format import atomic_write_bytes, json_bytes, token_dtype
from videodata.cache.reader import ShuffledSampler, TokenCache
from videodata.cache.sources import Source, discover_sources, rank_slice
from videodata.cache.writer import RankWriter, merge_manifest, prepare_cache_dir

GRID = (2, 3, 3)
FINGERPRINT = "ab" * 32


def make_cache(
    out: Path,
    num_clips: int = 7,
    shard_size: int = 3,
    world_size: int = 1,
    codebook_size: int = 100,
    caption=None,
    label=lambda i: i % 3,
) -> np.ndarray:
    """Writes a cache of ``num_clips`` clips (source i, clip 0, label ``label(i)``) through the real writer; returns
    the ids."""
    ids = np.random.default_rng(0).integers(0, codebook_size, (num_clips, *GRID))
    spec = {
        "identity": {
            "tokenizer_fingerprint": FINGERPRINT, "codebook_size": codebook_size, "grid": list(GRID),
            "dtype": token_dtype(codebook_size).name, "clip_spec": ClipWindow(num_frames=5, size=24).to_dict(),
            "shard_size": shard_size, "world_size": world_size, "sources_sha256": "0" * 64,
        },
        "tokenizer": {"path": "tok", "config": {}},
        "data": "data",
        "sources": [{"path": f"s{i}.mp4", "caption": f"caption {i}", "label": label(i)} for i in range(num_clips)],
    }  # fmt: skip
    prepare_cache_dir(out, spec)
    for rank in range(world_size):
        dtype = token_dtype(codebook_size)
        writer = RankWriter(out, rank=rank, world_size=world_size, shard_size=shard_size, dtype=dtype, grid=GRID)
        for i in rank_slice(num_clips, rank, world_size):
            text = caption(i) if caption else f"caption {i}"
            meta = {"source": i, "clip": 0, "start": 2 * i, "stride": 1, "label": label(i), "caption": text}
            writer.add(ids[i], **meta, last_of_source=True)
        writer.finish()
    merge_manifest(out, spec, world_size=world_size, wait_timeout_s=1, elapsed_s=0.0)
    return ids


def test_random_access_returns_every_clip_in_order(tmp_path):
    ids = make_cache(tmp_path / "c")
    cache = TokenCache(tmp_path / "c")
    assert cache.labels().tolist() == [i % 3 for i in range(7)]  # every clip's, across shards
    assert len(cache) == 7 and cache.grid == GRID and cache.codebook_size == 100 and cache.fingerprint == FINGERPRINT
    for i in [*range(7), -1, -7]:
        sample = cache[i]
        j = i % 7
        assert sample.ids.dtype == torch.long and tuple(sample.ids.shape) == GRID
        assert torch.equal(sample.ids, torch.from_numpy(ids[j]))
        assert (sample.label, sample.caption, sample.source, sample.start) == (j % 3, f"caption {j}", j, 2 * j)
    for bad in (7, -8):
        with pytest.raises(IndexError):
            cache[bad]
    # Shards are memory-mapped on first use only, and a pickled copy (DataLoader worker) reopens them.
    fresh = TokenCache(tmp_path / "c")
    assert not fresh._arrays_kept
    fresh[4]
    assert list(fresh._arrays_kept) == [1] and isinstance(fresh._arrays_kept[1][0], np.memmap)
    clone = pickle.loads(pickle.dumps(fresh))
    assert not clone._arrays_kept and torch.equal(clone[4].ids, cache[4].ids)


def test_the_reader_keeps_a_bounded_number_of_shards_open(tmp_path, monkeypatch):
    """Every shard touched stayed memory-mapped, two open files each, for the life of the reader: an epoch over a
    1,000-shard cache (or labels() at a class-conditional run's start) hit "Too many open files"."""
    import os

    import videodata.cache.reader as reader

    monkeypatch.setattr(reader, "_ARRAY_SHARDS_KEPT", 4, raising=False)
    ids = make_cache(tmp_path / "c", num_clips=30, shard_size=1)
    cache = TokenCache(tmp_path / "c")
    before = len(os.listdir("/proc/self/fd"))
    for i in [*range(30), *reversed(range(30))]:  # every shard, then again after each was dropped
        assert torch.equal(cache[i].ids, torch.from_numpy(ids[i]))
    assert cache.labels().tolist() == [i % 3 for i in range(30)]
    assert len(os.listdir("/proc/self/fd")) - before <= 2 * 4  # was 2 * 30
    assert len(cache._arrays_kept) == 4


def test_global_index_is_the_same_for_one_and_two_ranks(tmp_path):
    make_cache(tmp_path / "one", world_size=1)
    make_cache(tmp_path / "two", world_size=2)
    one, two = TokenCache(tmp_path / "one"), TokenCache(tmp_path / "two")
    assert [s["name"] for s in two.shards] == ["shard-r000-00000", "shard-r001-00000", "shard-r001-00001"]
    assert len(one) == len(two) == 7
    for i in range(7):
        assert torch.equal(one[i].ids, two[i].ids) and one[i].source == two[i].source == i


def test_wide_codebooks_use_int32(tmp_path):
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.int32 and token_dtype(2**31) == np.int32
    with pytest.raises(ValueError, match="does not fit the cache.s int32 ids"):  # FSQ [256]*4: ids wrapped to negative
        token_dtype(2**31 + 1)
    ids = make_cache(tmp_path / "c", codebook_size=70_000)
    cache = TokenCache(tmp_path / "c")
    assert cache._arrays(0)[0].dtype == np.int32
    assert torch.equal(cache[5].ids, torch.from_numpy(ids[5]))


def test_mismatched_expectations_are_refused_naming_both_values(tmp_path):
    make_cache(tmp_path / "c")
    TokenCache(tmp_path / "c", expect_fingerprint=FINGERPRINT, expect_codebook_size=100, expect_grid=GRID)
    cases = [
        ({"expect_fingerprint": "cd" * 32}, [FINGERPRINT, "cd" * 32]),
        ({"expect_codebook_size": 64}, ["100", "64"]),
        ({"expect_grid": (3, 3, 3)}, ["(2, 3, 3)", "(3, 3, 3)"]),
    ]
    for kwargs, values in cases:
        with pytest.raises(ValueError) as err:
            TokenCache(tmp_path / "c", **kwargs)
        assert all(v in str(err.value) for v in values), str(err.value)
    with pytest.raises(ValueError, match="has no manifest.json"):
        TokenCache(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        TokenCache(tmp_path / "missing")


def test_shuffle_is_deterministic_and_split_across_ranks():
    a, b = ShuffledSampler(10, seed=3), ShuffledSampler(10, seed=3)
    first, second = list(a), list(a)  # the second pass is epoch 1
    assert first == list(b) and sorted(first) == list(range(10)) and first != second
    assert first != list(ShuffledSampler(10, seed=4))
    ranks = [list(ShuffledSampler(10, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4]  # padded with the permutation's head
    assert set(sum(ranks, [])) == set(range(10))
    # the two padding draws are the permutation's first two clips (padding with index 0 drew clip 0 three times)
    assert sorted(sum(ranks, [])) == sorted(first + first[:2])
    assert [len(ShuffledSampler(10, seed=3, rank=r, world_size=3, drop_last=True)) for r in range(3)] == [3, 3, 3]
    with pytest.raises(ValueError):
        ShuffledSampler(10, seed=0, rank=2, world_size=2)


@pytest.mark.parametrize("stop", [0, 3, 7, 10, 13])
def test_shuffle_resumes_at_exactly_the_same_sample(stop):
    """Consume ``stop`` samples (across an epoch boundary for 13), save, resume in a new sampler."""
    uninterrupted = ShuffledSampler(7, seed=11, rank=1, world_size=2)
    expected = [i for _ in range(4) for i in uninterrupted]  # 4 epochs of 4 samples
    run = ShuffledSampler(7, seed=11, rank=1, world_size=2)
    got, it = [], iter(run)
    while len(got) < stop:
        try:
            got.append(next(it))
        except StopIteration:
            it = iter(run)
    state = run.state_dict()
    assert set(state) == {"epoch", "position", "seed"}
    resumed = ShuffledSampler(7, seed=0, rank=1, world_size=2)
    resumed.load_state_dict(state)
    while len(got) < len(expected):
        got.extend(resumed)
    assert got == expected
    with pytest.raises(ValueError):
        resumed.load_state_dict({"epoch": 0, "position": 99, "seed": 11})


def test_clip_planning_and_rank_slices():
    spec = ClipWindow(num_frames=9, clips_per_video=3)
    assert plan_starts(31, spec, stride=1) == [(0, 0), (1, 11), (2, 22)]
    assert plan_starts(9, spec, stride=1) == [(0, 0)]  # repeated starts are dropped
    assert plan_starts(16, spec, stride=2) == []  # 9 frames at stride 2 span 17
    explicit = ClipWindow(num_frames=9, clips_per_video=2, start_offsets=(4, 20))
    assert plan_starts(25, explicit, stride=1) == [(0, 4)]
    assert ClipWindow.from_options(num_frames=9, size=8, start_offsets=[0, 5]) == ClipWindow(
        num_frames=9, size=8, clips_per_video=2, start_offsets=(0, 5)
    )
    assert ClipWindow.from_options(num_frames=9, size=8, fps=5.0).stride == 1
    for options, message in [
        ({"stride": 2, "fps": 5.0}, "exclude each other"),
        ({"clips_per_video": 3, "start_offsets": [0, 5]}, "disagrees with 2"),
        ({"start_offsets": [4, 4]}, "distinct"),
        ({"clips_per_video": 0}, "clips_per_video must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            ClipWindow.from_options(num_frames=9, size=8, **options)
    blocks = [rank_slice(10, r, 3) for r in range(3)]
    assert [list(b) for b in blocks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


def test_manifest_sources_csv_and_jsonl(tmp_path):
    (tmp_path / "m.csv").write_text('path,caption,label\nb.mp4,"a, caption",2\na.mp4,,\n')
    root, sources = discover_sources(tmp_path / "m.csv")
    assert root == tmp_path
    assert sources == [Source(path="a.mp4"), Source(path="b.mp4", captions=("a, caption",), label=2)]
    (tmp_path / "m.jsonl").write_text('{"path": "/abs/x.mp4", "label": 1}\n\n{"path": "y.png", "caption": "c"}\n')
    _, sources = discover_sources(tmp_path / "m.jsonl")
    assert sources == [Source(path="/abs/x.mp4", label=1), Source(path="y.png", captions=("c",))]
    (tmp_path / "m.jsonl").write_text('{"path": "z.mp4", "captions": ["one", "two"]}\n')
    _, sources = discover_sources(tmp_path / "m.jsonl")
    assert sources == [Source(path="z.mp4", captions=("one", "two"))] and sources[0].caption == "one"
    for text, message in [
        ('{"path": "a.mp4", "caption": "x", "captions": ["y"]}\n', "not both"),
        ('{"path": "a.mp4", "captions": []}\n', "non-empty list"),
        ('{"path": "a.mp4", "captions": ["ok", 3]}\n', "non-empty list of non-blank strings"),
        # a blank entry among good ones passed, and stopped a text-conditional run when training drew it
        ('{"path": "a.mp4", "captions": ["ok", "   "]}\n', "non-empty list of non-blank strings"),
        ('{"path": "a.mp4", "captions": ["ok", "\\u200b"]}\n', "non-empty list of non-blank strings"),
        ('{"path": "a.mp4", "label": "x"}\n', "line 1: label 'x' is not an integer"),
        ('{"caption": "no path"}\n', "line 1: needs a non-empty 'path'"),
        ("[1, 2]\n", "line 1: expected a JSON object"),
    ]:
        (tmp_path / "bad.jsonl").write_text(text)
        with pytest.raises(ValueError, match=message):
            discover_sources(tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text("file,caption\na.mp4,x\n")
    with pytest.raises(ValueError, match="'path' column"):
        discover_sources(tmp_path / "bad.csv")
    (tmp_path / "big.jsonl").write_text('{"path": "a.mp4", "label": 9223372036854775808}\n')  # 2^63
    with pytest.raises(ValueError, match="line 1: label must be an integer >= 0"):  # was an OverflowError, late
        discover_sources(tmp_path / "big.jsonl")


def test_a_csv_quote_that_is_never_closed_is_an_error_not_lost_rows(tmp_path):
    """An unclosed quote made the rest of the file one caption: the later rows were silently dropped, and in a
    large manifest csv's field limit raised a csv.Error, a traceback from the CLI."""
    (tmp_path / "m.csv").write_text('path,caption\na.mp4,"12 inch vinyl\nb.mp4,a dog\nc.mp4,a cat\n')
    with pytest.raises(ValueError, match="m.csv line 2: not valid CSV"):
        discover_sources(tmp_path / "m.csv")
    rows = "".join(f"v{i}.mp4,caption {i}\n" for i in range(20_000))  # 300 kB swallowed by the quote
    (tmp_path / "m.csv").write_text('path,caption\na.mp4,"12 inch vinyl\n' + rows)
    with pytest.raises(ValueError, match="not valid CSV"):
        discover_sources(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text('path,caption\na.mp4,"one\ntwo"\nb.mp4,x\n')  # closed: still fine
    assert [s.path for s in discover_sources(tmp_path / "m.csv")[1]] == ["a.mp4", "b.mp4"]


def test_manifests_keep_line_breaks_inside_fields_and_accept_a_byte_order_mark(tmp_path):
    """str.splitlines() split valid JSON Lines at U+2028 (json.dumps(ensure_ascii=False) writes it raw), and a CSV
    caption with a quoted line break lost it, or its label, or became a second source."""
    import json

    rows = [{"path": "a.mp4", "caption": "one\u2028two\x0cthree\u0085four", "label": 1}, {"path": "b.mp4"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    _, sources = discover_sources(tmp_path / "m.jsonl")
    assert sources == [
        Source(path="a.mp4", captions=("one\u2028two\x0cthree\u0085four",), label=1),
        Source(path="b.mp4"),
    ]
    (tmp_path / "m.csv").write_bytes('\ufeffpath,caption,label\nv0.mp4,"two\nlines",1\nv1.mp4,"x\ny",2\n'.encode())
    _, sources = discover_sources(tmp_path / "m.csv")
    assert sources == [
        Source(path="v0.mp4", captions=("two\nlines",), label=1),
        Source(path="v1.mp4", captions=("x\ny",), label=2),
    ]


def test_several_captions_travel_through_the_cache_and_training_draws_each(tmp_path):
    from videotrain.generator_data import pick_caption

    make_cache(tmp_path / "c", caption=lambda i: [f"first {i}", f"second {i}"] if i % 2 else f"only {i}")
    cache = TokenCache(tmp_path / "c")
    assert (cache[1].caption, cache[1].captions) == ("first 1", ("first 1", "second 1"))
    assert (cache[2].caption, cache[2].captions) == ("only 2", ("only 2",))
    g = torch.Generator().manual_seed(0)
    drawn = {pick_caption(cache[1], g) for _ in range(50)}
    assert drawn == {"first 1", "second 1"}
    assert pick_caption(cache[1], None) == "first 1" and pick_caption(cache[2], g) == "only 2"


def test_a_folder_of_frames_is_decoded_like_a_video(tmp_path, monkeypatch):
    from PIL import Image

    from videodata.cache import decode
    from videodata.cache.decode import DecodeTask, count_frames, decode_source
    from videodata.cache.sources import SourceError

    frames = np.random.default_rng(0).integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(clip / f"{i:04d}.png")
    assert count_frames(clip) == 9
    got = decode_source(DecodeTask(index=0, file=str(clip), window=ClipWindow(num_frames=5, size=16)))
    np.testing.assert_array_equal(got.frames[0], frames[:5])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="is a folder without image frames"):
        decode_source(DecodeTask(index=0, file=str(empty), window=ClipWindow(num_frames=5, size=16)))
    (tmp_path / "none.mp4").write_bytes(b"\0")  # a file whose decoder counts no frame was called a folder
    with monkeypatch.context() as patch:
        patch.setattr(decode, "count_frames", lambda path: 0)
        with pytest.raises(SourceError, match="none.mp4' is a file without frames"):
            decode_source(
                DecodeTask(index=0, file=str(tmp_path / "none.mp4"), window=ClipWindow(num_frames=5, size=16))
            )
    with pytest.raises(SourceError, match="no frame rate"):
        decode_source(DecodeTask(index=0, file=str(clip), window=ClipWindow(num_frames=5, size=16, fps=4.0)))
    late = ClipWindow(num_frames=5, size=16, clips_per_video=1, start_offsets=(6,))  # 9 frames; offset 6 needs 11
    with pytest.raises(SourceError, match="has 9 frame.s.; 5 frames at stride 1 need 5, from start offset 6: 11"):
        decode_source(DecodeTask(index=0, file=str(clip), window=late))  # said "need 5" of a 9-frame video


def test_a_rank_that_finds_spec_json_appearing_is_not_refused(tmp_path, monkeypatch):
    """Ranks prepare the folder together: another rank's spec.json renamed into place between this rank's check
    and its listing of the folder must not make the folder look like a foreign, non-empty one."""
    out, spec = tmp_path / "cache", {"identity": {"codebook_size": 100}}
    listdir = Path.iterdir

    def other_rank_writes_first(self):
        if self == out and not (out / "spec.json").exists():
            atomic_write_bytes(out / "spec.json", json_bytes(spec))
        return listdir(self)

    monkeypatch.setattr(Path, "iterdir", other_rank_writes_first)
    assert prepare_cache_dir(out, spec) is True  # found the other rank's spec, which matches
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        prepare_cache_dir(tmp_path / "file", spec)


def test_captionless_lists_the_clips_without_a_usable_caption(tmp_path):
    """A text-conditional run drew such a clip mid-run and stopped; the trainer now refuses the cache at build."""
    odd = {2: "", 5: "   ", 3: ["good", "\u200b"], 6: ["  ", "good"]}  # one blank caption of several counts too
    make_cache(tmp_path / "c", num_clips=7, shard_size=3, caption=lambda i: odd.get(i, f"caption {i}"))
    assert TokenCache(tmp_path / "c").captionless() == [2, 3, 5, 6]
    make_cache(tmp_path / "d", num_clips=4)
    assert TokenCache(tmp_path / "d").captionless() == []


def test_a_second_writer_on_a_rank_is_refused_and_the_first_keeps_its_files(tmp_path):
    """A command launched twice (or a requeued job whose first copy still ran) took the folder as a resume, and its
    scan deleted the shard files the first was writing; the first then marked the missing shard done."""
    out = tmp_path / "c"
    make_cache(out, num_clips=2, shard_size=2)  # a spec to write against
    for name in [p.name for p in out.iterdir() if p.name.startswith(("shard-", "rank-", "manifest"))]:
        (out / name).unlink()
    first = RankWriter(out, rank=0, world_size=1, shard_size=1, dtype=np.uint16, grid=GRID)
    first.add(np.zeros(GRID, np.int64), source=0, clip=0, start=0, stride=1, label=0, caption="", last_of_source=True)
    written = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match="another process is writing rank 0"):
        RankWriter(out, rank=0, world_size=1, shard_size=1, dtype=np.uint16, grid=GRID)
    assert sorted(p.name for p in out.iterdir()) == written
    RankWriter(out, rank=1, world_size=1, shard_size=1, dtype=np.uint16, grid=GRID).close()  # other ranks are free
    first.finish()
    again = RankWriter(out, rank=0, world_size=1, shard_size=1, dtype=np.uint16, grid=GRID)  # the lock is released
    assert again.complete and again.num_clips == 1
    again.close()
