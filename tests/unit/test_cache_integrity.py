"""The token cache's sources and shards stay trustworthy: one file listed twice, a name that is not UTF-8, a shard
damaged in place and a stale manifest are each refused or repaired, never carried into a "complete" cache."""

import json
import os

import numpy as np
import pytest

from tests.unit.test_token_data import GRID, make_cache
from videodata.cache.format import MANIFEST_NAME, shard_file, shard_name, token_dtype, verify_cache
from videodata.cache.reader import TokenCache
from videodata.cache.sources import discover_sources
from videodata.cache.writer import RankWriter, merge_manifest


@pytest.mark.parametrize(
    "rows,second",
    [
        ("path\na.mp4\nb.mp4\na.mp4\n", "m.csv line 4"),
        ("path\na.mp4\n./a.mp4\n", "m.csv line 3"),
        ('{"path": "a.mp4", "caption": "x"}\n{"path": "sub/../a.mp4", "caption": "y"}\n', "m.jsonl line 2"),
    ],
    ids=["same", "dot-slash", "dot-dot"],
)
def test_one_video_listed_twice_is_refused_naming_both_rows(tmp_path, rows, second):
    """Each row became its own source, so split_by_source could hold one copy out and train on the other: the
    held-out loss was computed on training clips."""
    name = second.split()[0]
    (tmp_path / name).write_text(rows)
    with pytest.raises(ValueError, match=rf"^{second} names .* again \(as {name} line \d did\): list each video once"):
        discover_sources(tmp_path / name)
    absolute = tmp_path / "abs.csv"
    absolute.write_text(f"path\na.mp4\n{tmp_path / 'a.mp4'}\n")  # a relative and an absolute spelling of one file
    with pytest.raises(ValueError, match="abs.csv line 3 names"):
        discover_sources(absolute)
    (tmp_path / "ok.csv").write_text("path\na.mp4\nb.mp4\n")
    assert [s.path for s in discover_sources(tmp_path / "ok.csv")[1]] == ["a.mp4", "b.mp4"]


def test_a_name_or_caption_that_is_not_utf8_is_refused_naming_it(tmp_path):
    """The build stopped with "'utf-8' codec can't encode character '\\udce9' in position 46", naming neither."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "good.mp4").write_bytes(b"")
    try:
        (data / os.fsdecode(b"caf\xe9.mp4")).write_bytes(b"")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes UTF-8 names only")
    with pytest.raises(ValueError, match=r"file name 'caf\\udce9.mp4' under .* is not valid UTF-8"):
        discover_sources(data)
    (tmp_path / "m.jsonl").write_text('{"path": "good.mp4"}\n{"path": "b.mp4", "caption": "\\ud800 broken"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl line 2: caption '\\ud800 broken' is not valid UTF-8"):
        discover_sources(tmp_path / "m.jsonl")


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last token id: the size stays the same
    path.write_bytes(bytes(data))


def _writer(out):
    return RankWriter(out, rank=0, world_size=1, shard_size=2, dtype=token_dtype(100), grid=GRID)


def test_a_shard_damaged_in_place_is_redone_on_resume_and_the_stale_manifest_goes_first(tmp_path):
    """Only sizes were compared: a rerun kept a shard with a flipped byte, printed success and wrote a manifest that
    failed verify. And a rerun killed while redoing shards left the old manifest, which still called the cache
    complete while its shards were being removed."""
    out = tmp_path / "c"
    ids = make_cache(out, num_clips=6, shard_size=2)
    _flip_a_byte(out / shard_file(shard_name(0, 1), "tokens"))
    assert verify_cache(out)[0]  # verify sees it
    writer = _writer(out)
    try:
        assert not writer.complete and len(writer.shards) == 1 and writer.resume_from == (2, 0)
        assert not (out / MANIFEST_NAME).exists()  # nothing calls the cache finished while shards 1-2 are redone
    finally:
        writer.close()
    spec = json.loads((out / "spec.json").read_text())
    writer = _writer(out)
    for i in range(2, 6):
        meta = {"source": i, "clip": 0, "start": 2 * i, "stride": 1, "label": i % 3, "caption": f"caption {i}"}
        writer.add(ids[i], **meta, last_of_source=True)
    writer.finish()
    merge_manifest(out, spec, world_size=1, wait_timeout_s=1, elapsed_s=0.0)
    assert verify_cache(out) == ([], 9)
    assert np.array_equal(np.stack([TokenCache(out)[i].ids.numpy() for i in range(6)]), ids)


def test_the_merge_refuses_a_shard_that_differs_from_its_record(tmp_path):
    """With several ranks, rank 0 could read another rank's done file from an earlier run while that rank was
    rewriting its shards, and write a manifest over files that no longer matched it."""
    out = tmp_path / "c"
    make_cache(out, num_clips=4, shard_size=2)
    spec = json.loads((out / "spec.json").read_text())
    (out / MANIFEST_NAME).unlink()
    _flip_a_byte(out / shard_file(shard_name(0, 1), "meta"))
    with pytest.raises(ValueError, match=r"shard shard-r000-00001 file .*meta.npy has another sha256 than its record"):
        merge_manifest(out, spec, world_size=1, wait_timeout_s=1, elapsed_s=0.0)
    (out / shard_file(shard_name(0, 1), "captions")).unlink()
    with pytest.raises(ValueError, match=r"shard shard-r000-00001 has an unreadable record or file"):
        merge_manifest(out, spec, world_size=1, wait_timeout_s=1, elapsed_s=0.0)
    assert not (out / MANIFEST_NAME).exists()


def test_the_merge_waits_for_another_rank_to_redo_a_shard_its_old_record_names(tmp_path):
    """On a rerun rank 0, with its own share complete, merged at once and read rank 1's record from the earlier run
    before rank 1's scan had removed it: the damaged shard rank 1 was about to redo stopped the run ("rerun the same
    command"), and a second rerun was needed. Rank 0 now waits while that rank redoes it (here: a thread restores
    the shard's bytes, as rank 1's rewrite would); one that is never redone still fails at the deadline."""
    import threading
    import time

    out = tmp_path / "c"
    make_cache(out, num_clips=6, shard_size=2, world_size=2)
    spec = json.loads((out / "spec.json").read_text())
    (out / MANIFEST_NAME).unlink()
    tokens = out / shard_file(shard_name(1, 0), "tokens")
    good = tokens.read_bytes()
    _flip_a_byte(tokens)
    with pytest.raises(ValueError, match=r"shard shard-r001-00000 file .*tokens.npy has another sha256"):
        merge_manifest(out, spec, world_size=2, wait_timeout_s=0.3, elapsed_s=0.0, poll_s=0.05)
    redo = threading.Timer(0.3, tokens.write_bytes, args=(good,))
    redo.start()
    start = time.monotonic()
    try:
        manifest = merge_manifest(out, spec, world_size=2, wait_timeout_s=30, elapsed_s=0.0, poll_s=0.05)
    finally:
        redo.join()
    assert time.monotonic() - start >= 0.25 and manifest["num_clips"] == 6
    assert verify_cache(out)[0] == []
