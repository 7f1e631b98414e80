"""tools/cache_tokens.py end to end: a corpus with every kind of bad file, kill-and-resume,
two ranks under torchrun, manifest verification, and tokens equal to a direct encode.

Faults are injected by tests.helpers.cache_faults: a decoder that hangs on ``hang_*`` files and
segfaults on ``crash_*`` files, and a kill after N file writes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import build_config
from core.frames import frames_to_tensor
from core.video_io import read_video
from core.video_write import write_video
from tests.helpers.cache_faults import inject_decode_faults
from tokenizer import TokenizerConfig, VideoTokenizer
from tools.cache_tokens import main
from videodata.cache.format import MANIFEST_NAME, tokenizer_fingerprint
from videodata.cache.reader import TokenCache

# 20, 25, ... 40 frames: two 9-frame clips each. Names sort so both of two ranks get good files.
GOOD = ["a0.mp4", "a1.mp4", "a2.mp4", "w3.mp4", "w4.mp4"]
BAD = {  # file -> quarantine reason
    "corrupt.mp4": "undecodable",
    "crash_me.mp4": "crashed",
    "hang_me.mp4": "timeout",
    "img.png": "too_short",  # an image is a 1-frame clip; 9 frames are asked for
    "sub/short.mp4": "too_short",
    "text.mp4": "undecodable",
    "trunc.mp4": "undecodable",
    "zero.mp4": "empty",
}
# The timeout clock starts when a worker begins a file (not at worker start-up), and a good file
# decodes in well under 0.1 s, so 5 s leaves a wide margin on a loaded machine.
TIMEOUT_S = "5"
# The CLI with the faulty decoder, for subprocess runs (the repo root must be importable: PYTHONPATH).
FAULTY_CLI = ["-c", "import sys; from tests.helpers.cache_faults import main; sys.exit(main())"]


def wave_clip(T: int, seed: int, H: int = 40, W: int = 48) -> np.ndarray:
    """(T, H, W, 3) uint8 smooth moving pattern, different per seed."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    channels = lambda t: [  # noqa: E731
        128 + 90 * np.sin((x + 3 * t + 5 * seed) / 7),
        128 + 90 * np.cos((y + t * (seed + 1)) / 5),
        np.full_like(x, 20 * seed + 4 * t),
    ]
    frames = [np.stack(channels(t), -1) for t in range(T)]
    return np.stack(frames).clip(0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, repo_root) -> Path:
    root = tmp_path_factory.mktemp("cache_tokens")
    torch.manual_seed(0)
    config = build_config(TokenizerConfig, [repo_root / "configs/tiny/tokenizer.yaml"])
    VideoTokenizer(config).save_pretrained(root / "tok")
    data = root / "data"
    for i, name in enumerate(GOOD):
        write_video(data / name, wave_clip(20 + 5 * i, i), fps=10)
    write_video(data / "sub" / "short.mp4", wave_clip(5, 9), fps=10)
    write_video(data / "hang_me.mp4", wave_clip(12, 7), fps=10)
    write_video(data / "crash_me.mp4", wave_clip(12, 8), fps=10)
    Image.fromarray(wave_clip(1, 3)[0]).save(data / "img.png")
    (data / "zero.mp4").write_bytes(b"")
    (data / "text.mp4").write_text("this is not a video\n")
    good = (data / GOOD[1]).read_bytes()
    (data / "trunc.mp4").write_bytes(good[: len(good) // 2])
    (data / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    # A manifest over the same files (list_media ignores .jsonl), with captions, labels and a missing file.
    rows = [{"path": p, "caption": f"clip {p}", "label": i} for i, p in enumerate(GOOD)]
    rows += [{"path": p} for p in BAD] + [{"path": "gone.mp4", "caption": "never there"}]
    (data / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def build_args(corpus: Path, out: Path, data: Path | None = None, *extra: str) -> list[str]:
    return [
        "--data", str(data or corpus / "data"), "--tokenizer", str(corpus / "tok"), "--out", str(out),
        "--num-frames", "9", "--size", "32", "--clips-per-video", "2", "--shard-size", "3",
        "--batch-size", "2", "--num-workers", "2", "--decode-timeout", TIMEOUT_S, "--threads", "1", "--no-progress",
        *extra,
    ]  # fmt: skip


def run_in_process(argv: list[str], monkeypatch, faults: bool = True) -> int:
    threads = torch.get_num_threads()
    if faults:
        inject_decode_faults(monkeypatch)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


def faulty_cli_env(repo_root: Path, **extra: str) -> dict[str, str]:
    """The environment for a FAULTY_CLI subprocess: no launcher variables but ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")])), **extra}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """One uninterrupted single-rank run over the folder."""
    out = tmp_path_factory.mktemp("ref") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        assert run_in_process(build_args(corpus, out), mp) == 0
    return out


def manifest_of(cache: Path) -> dict:
    manifest = json.loads((cache / MANIFEST_NAME).read_text())
    manifest.pop("run")  # timing only
    return manifest


def clip_map(cache: Path) -> dict[tuple[str, int], np.ndarray]:
    """(source path, start frame) -> token ids, for every clip of a cache."""
    tc = TokenCache(cache)
    return {(tc.sources[s.source]["path"], s.start): s.ids.numpy() for s in map(tc.__getitem__, range(len(tc)))}


def test_bad_files_are_quarantined_and_good_ones_cached(reference, corpus, capsys):
    manifest = manifest_of(reference)
    assert {q["path"]: q["reason"] for q in manifest["quarantine"]} == BAD
    assert all(q["detail"] for q in manifest["quarantine"])
    assert "SIGSEGV" in next(q["detail"] for q in manifest["quarantine"] if q["reason"] == "crashed")
    assert [s["path"] for s in manifest["sources"]] == sorted([*GOOD, *BAD])
    assert manifest["num_clips"] == 2 * len(GOOD) and manifest["grid"] == [3, 4, 4] and manifest["dtype"] == "uint16"
    assert [s["num_clips"] for s in manifest["shards"]] == [3, 3, 3, 1]
    assert manifest["tokenizer"]["fingerprint"] == tokenizer_fingerprint(corpus / "tok")
    assert manifest["clip_spec"] == {
        "num_frames": 9, "size": 32, "stride": 1, "fps": None, "clips_per_video": 2, "start_offsets": "even",
    }  # fmt: skip
    tokens = np.load(reference / manifest["shards"][0]["files"]["tokens"]["file"], mmap_mode="r", allow_pickle=False)
    assert tokens.dtype == np.uint16 and tokens.shape == (3, 3, 4, 4)
    # Global order is work-item order; starts are spread evenly over each video.
    cache = TokenCache(reference)
    items = [(cache.sources[cache[i].source]["path"], cache[i].start) for i in range(len(cache))]
    assert items == [(name, s) for i, name in enumerate(GOOD) for s in (0, 11 + 5 * i)]
    assert cache[0].label == -1 and cache[0].caption == ""
    assert not [p for p in reference.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cached_tokens_equal_a_direct_encode(reference, corpus):
    tokenizer = VideoTokenizer.from_pretrained(corpus / "tok")
    cache = TokenCache(reference)
    samples = [cache[i] for i in range(len(cache))]
    paths = [corpus / "data" / cache.sources[s.source]["path"] for s in samples]
    clips = [
        frames_to_tensor(read_video(p, num_frames=9, start=s.start, size=32))
        for p, s in zip(paths, samples, strict=True)
    ]
    expected = tokenizer.encode(torch.stack(clips))  # (N, t, h, w): one batch, not the cache's batches of 2
    cached = torch.stack([s.ids for s in samples])
    assert cached.dtype == torch.long and torch.equal(cached, expected)


def test_verify_catches_one_flipped_byte(reference, tmp_path, capsys):
    assert main(["verify", str(reference)]) == 0
    assert capsys.readouterr().out.startswith("ok: 12 files")
    for kind in ("tokens", "meta", "captions"):
        copy = tmp_path / kind
        shutil.copytree(reference, copy)
        shard = manifest_of(copy)["shards"][2]
        path = copy / shard["files"][kind]["file"]
        data = bytearray(path.read_bytes())
        data[-2] ^= 0x01
        path.write_bytes(bytes(data))
        assert main(["verify", str(copy)]) == 1
        err = capsys.readouterr().err
        assert f"shard {shard['name']}: {kind} file {path.name} has sha256" in err, err


def test_kill_and_resume_equals_an_uninterrupted_run(reference, corpus, tmp_path, repo_root, monkeypatch):
    out = tmp_path / "cache"
    argv = build_args(corpus, out)
    # Killed mid-shard: after shard 0 (4 files) and the tokens and meta files of shard 1.
    cmd = [sys.executable, *FAULTY_CLI, "--exit-after-writes", "6", *argv]
    proc = subprocess.run(cmd, env=faulty_cli_env(repo_root), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 3, proc.stderr
    assert (out / "shard-r000-00001.meta.npy").is_file() and not (out / "shard-r000-00001.done.json").exists()
    assert not (out / MANIFEST_NAME).exists()
    assert run_in_process(argv, monkeypatch) == 0
    assert manifest_of(out) == manifest_of(reference)
    for shard in manifest_of(out)["shards"]:
        for entry in shard["files"].values():
            assert (out / entry["file"]).read_bytes() == (reference / entry["file"]).read_bytes()
    # A finished cache reruns as a no-op.
    assert run_in_process(argv, monkeypatch) == 0
    assert manifest_of(out) == manifest_of(reference)


def test_two_ranks_equal_one_rank(reference, corpus, tmp_path, repo_root, monkeypatch):
    """Rank 1 runs as a separate process while rank 0 runs here, waits for it, and merges."""
    out = tmp_path / "cache2"
    argv = build_args(corpus, out, corpus / "data" / "list.jsonl")
    env = faulty_cli_env(repo_root, RANK="1", WORLD_SIZE="2")
    cmd = [sys.executable, *FAULTY_CLI, *argv]
    rank1 = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        inject_decode_faults(monkeypatch)
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "2")
        threads = torch.get_num_threads()
        try:
            assert main(argv) == 0
        finally:
            torch.set_num_threads(threads)
        out1, err1 = rank1.communicate(timeout=120)
    finally:
        rank1.kill()
    assert rank1.returncode == 0 and out1.startswith("rank 1: "), err1
    manifest = manifest_of(out)
    assert manifest["world_size"] == 2
    assert [s["name"] for s in manifest["shards"]] == [f"shard-r{r:03d}-{i:05d}" for r in (0, 1) for i in (0, 1)]
    assert {q["path"]: q["reason"] for q in manifest["quarantine"]} == {**BAD, "gone.mp4": "missing"}
    ref_map, two_map = clip_map(reference), clip_map(out)
    assert ref_map.keys() == two_map.keys()
    assert all(np.array_equal(ref_map[k], two_map[k]) for k in ref_map)
    cache = TokenCache(out)
    first = cache[0]
    assert (cache.sources[first.source]["path"], first.caption, first.label) == ("a0.mp4", "clip a0.mp4", 0)
    assert [cache[i].label for i in range(len(cache))] == [i // 2 for i in range(10)]
    assert main(["verify", str(out)]) == 0


def test_resume_with_another_tokenizer_or_clip_spec_is_refused(reference, corpus, tmp_path, monkeypatch, capsys):
    other = tmp_path / "other_tok"
    torch.manual_seed(1)
    VideoTokenizer(VideoTokenizer.from_pretrained(corpus / "tok").config).save_pretrained(other)
    before = manifest_of(reference)
    argv = build_args(corpus, reference)
    argv[argv.index("--tokenizer") + 1] = str(other)
    assert run_in_process(argv, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot resume")
    assert tokenizer_fingerprint(corpus / "tok") in err and tokenizer_fingerprint(other) in err
    argv = build_args(corpus, reference, None, "--stride", "2")
    assert run_in_process(argv, monkeypatch) == 2
    err = capsys.readouterr().err
    assert '"stride": 1' in err and '"stride": 2' in err
    assert manifest_of(reference) == before


def test_images_are_one_frame_clips(corpus, tmp_path, monkeypatch):
    data = tmp_path / "imgs"
    data.mkdir()
    shutil.copy(corpus / "data" / "img.png", data / "a.png")
    shutil.copy(corpus / "data" / GOOD[0], data / "b.mp4")
    argv = build_args(corpus, tmp_path / "c", data, "--num-workers", "0")
    argv[argv.index("--num-frames") + 1] = "1"
    assert run_in_process(argv, monkeypatch, faults=False) == 0
    cache = TokenCache(tmp_path / "c", expect_grid=(1, 4, 4))
    assert [(cache.sources[s.source]["path"], s.start) for s in map(cache.__getitem__, range(len(cache)))] == [
        ("a.png", 0), ("b.mp4", 0), ("b.mp4", 19),
    ]  # fmt: skip


def test_target_fps_sets_the_stride(corpus, tmp_path, monkeypatch):
    """A 10 fps video cached at --fps 5 takes every 2nd frame; explicit starts are honoured."""
    data = tmp_path / "vids"
    data.mkdir()
    shutil.copy(corpus / "data" / GOOD[0], data / "b.mp4")  # 20 frames at 10 fps
    argv = build_args(corpus, tmp_path / "c", data, "--num-workers", "0", "--fps", "5", "--start-offsets", "0,3,15")
    argv[argv.index("--clips-per-video") : argv.index("--clips-per-video") + 2] = []
    assert run_in_process(argv, monkeypatch, faults=False) == 0
    cache = TokenCache(tmp_path / "c")
    meta = np.load(tmp_path / "c" / cache.shards[0]["files"]["meta"]["file"], allow_pickle=False)
    assert meta["stride"].tolist() == [2, 2] and meta["start"].tolist() == [0, 3]  # start 15 + 16 > 20 frames
    assert manifest_of(tmp_path / "c")["clip_spec"]["start_offsets"] == [0, 3, 15]
    tokenizer = VideoTokenizer.from_pretrained(corpus / "tok")
    frames = read_video(data / "b.mp4", num_frames=9, stride=2, start=3, size=32)
    assert torch.equal(cache[1].ids, tokenizer.encode(frames_to_tensor(frames).unsqueeze(0))[0])


def test_cli_bad_input_exits_2_with_one_line(corpus, reference, tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    damaged = tmp_path / "damaged"
    shutil.copytree(reference, damaged)
    manifest = manifest_of(damaged)
    del manifest["shards"][0]["files"]["tokens"]["sha256"]  # still valid JSON, no longer a manifest
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    unlisted = tmp_path / "unlisted"  # verify passed it (it checks the files listed) and the reader hit a KeyError
    shutil.copytree(reference, unlisted)
    manifest = manifest_of(unlisted)
    del manifest["shards"][0]["files"]["captions"]
    (unlisted / "manifest.json").write_text(json.dumps(manifest))
    cases = {
        "verify unlisted": (["verify", str(unlisted)], "shard shard-r000-00000 lists no captions file"),
        "--out file": (build_args(corpus, tmp_path / "a_file"), "is a file, not a folder"),
        "verify damaged": (
            ["verify", str(damaged)],
            "is damaged: shard shard-r000-00000: tokens file entry lacks 'sha256'",
        ),
        "--data": (build_args(corpus, tmp_path / "a", tmp_path / "missing"), "does not exist"),
        "--tokenizer": ([*build_args(corpus, tmp_path / "b"), "--tokenizer", str(tmp_path / "nope")], "does not exist"),
        "--num-frames": ([*build_args(corpus, tmp_path / "c"), "--num-frames", "8"], "not of the form 1 + k*4"),
        "--size": ([*build_args(corpus, tmp_path / "d"), "--size", "36"], "multiple of the spatial compression 8"),
        "--stride/--fps": ([*build_args(corpus, tmp_path / "e"), "--stride", "2", "--fps", "5"], "not allowed with"),
        "--start-offsets": ([*build_args(corpus, tmp_path / "f"), "--start-offsets", "0,x"], "--start-offsets"),
        "--device": ([*build_args(corpus, tmp_path / "g"), "--device", "tpu9"], "unknown device"),
        "--clips-per-video": ([*build_args(corpus, tmp_path / "h"), "--start-offsets", "0,4,8"], "disagrees with 3"),
        "verify": (["verify", str(tmp_path / "nothing")], "does not exist"),
        # an OverflowError traceback from the OS's wait, after spec.json was written
        "--decode-timeout inf": ([*build_args(corpus, tmp_path / "i"), "--decode-timeout", "inf"], "finite number > 0"),
        "--wait-timeout nan": ([*build_args(corpus, tmp_path / "j"), "--wait-timeout", "nan"], "finite number > 0"),
    }
    for what, (argv, message) in cases.items():
        assert run_in_process(argv, monkeypatch) == 2, what
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err, (what, err)


def test_without_pyav_videos_are_one_error_and_images_still_cache(corpus, tmp_path, monkeypatch, capsys):
    """A missing PyAV quarantined every video, one warning each, and wrote an empty cache; now it is one line, exit
    2, before anything is written. A dataset of images alone does not need it."""
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    argv = build_args(corpus, tmp_path / "v", None, "--num-workers", "0")
    assert run_in_process(argv, monkeypatch, faults=False) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: video files need PyAV") and "pip install av" in err
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(corpus / "data" / "img.png", images / "a.png")
    argv = build_args(corpus, tmp_path / "i", images, "--num-workers", "0")
    argv[argv.index("--num-frames") + 1] = "1"
    assert run_in_process(argv, monkeypatch, faults=False) == 0
    assert len(TokenCache(tmp_path / "i", expect_grid=(1, 4, 4))) == 1
