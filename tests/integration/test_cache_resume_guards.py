"""tools/cache_tokens.py on resume: another dataset under the same file names is refused, and a source that fails
after some of its clips were cached is recorded in the manifest's quarantine list, not dropped without a trace."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.config import build_config
from core.video_write import write_video
from tests.integration.test_cache_tokens import FAULTY_CLI, faulty_cli_env, manifest_of, wave_clip
from tokenizer import TokenizerConfig, VideoTokenizer
from tools.cache_tokens import main
from videodata.cache import build
from videodata.cache.decode import decode_source
from videodata.cache.sources import SourceError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, repo_root) -> Path:
    root = tmp_path_factory.mktemp("cache_resume")
    torch.manual_seed(0)
    VideoTokenizer(build_config(TokenizerConfig, [repo_root / "configs/tiny/tokenizer.yaml"])).save_pretrained(
        root / "tok"
    )
    for i in range(2):
        write_video(root / "data" / f"a{i}.mp4", wave_clip(20, i), fps=10)
    return root


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()  # --threads 1 sets them for the process
    yield
    torch.set_num_threads(threads)


def args(root: Path, data: Path, out: Path) -> list[str]:
    return [
        "--data", str(data), "--tokenizer", str(root / "tok"), "--out", str(out), "--num-frames", "9", "--size", "32",
        "--clips-per-video", "2", "--shard-size", "1", "--batch-size", "1", "--num-workers", "0", "--threads", "1",
        "--no-progress",
    ]  # fmt: skip


def test_resuming_on_another_folder_with_the_same_names_is_refused(tiny, tmp_path, capsys):
    """Only paths, captions and labels were compared: a resume with --data on other videos of the same names went
    on and mixed the two datasets in one cache. A moved copy of the same files still resumes."""
    out = tmp_path / "cache"
    assert main(args(tiny, tiny / "data", out)) == 0
    before = manifest_of(out)
    moved = tmp_path / "moved"
    shutil.copytree(tiny / "data", moved)
    assert main(args(tiny, moved, out)) == 0
    other = tmp_path / "other"
    shutil.copytree(tiny / "data", other)
    write_video(other / "a0.mp4", wave_clip(25, 5), fps=10)
    capsys.readouterr()
    assert main(args(tiny, other, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot resume" in err and "source_sizes_sha256" in err, err
    after = manifest_of(out)
    assert after.pop("data") == str(moved.resolve()) and before.pop("data") == str((tiny / "data").resolve())
    assert after == before


def test_a_source_that_fails_on_resume_is_quarantined_as_partial(tiny, tmp_path, repo_root, monkeypatch):
    """Killed after the first clip of a0, then a0 failed to decode on resume: its second clip was lost, the manifest's
    quarantine list stayed empty and the run reported 0 quarantined."""
    out = tmp_path / "cache"
    argv = args(tiny, tiny / "data", out)
    cmd = [sys.executable, *FAULTY_CLI, "--exit-after-writes", "4", *argv]  # shard 0 (a0, clip 0) and its record
    proc = subprocess.run(cmd, env=faulty_cli_env(repo_root), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 3, proc.stderr

    def fails_on_resume(task):
        if task.min_clip > 0:
            raise SourceError("undecodable", "a flaky mount")
        return decode_source(task)

    monkeypatch.setattr(build, "decode_source", fails_on_resume)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert main(argv) == 0
    [entry] = manifest_of(out)["quarantine"]
    assert (entry["path"], entry["reason"]) == ("a0.mp4", "partial")
    assert "clips from 1 on" in entry["detail"] and "a flaky mount" in entry["detail"]
    assert sum(shard["num_clips"] for shard in manifest_of(out)["shards"]) == 3  # a0 clip 0, a1 clips 0 and 1
