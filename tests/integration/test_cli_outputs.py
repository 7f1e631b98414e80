"""Every CLI checks its outputs before its work: an output that is one of its inputs is refused (it was replaced), an
output folder that is a file is named by its flag (an "[Errno 17] File exists" came after the work), and sizes or
counts that cannot run are refused in one line (a 475 GiB MemoryError traceback, a cache of 0 clips with exit 0)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from core.config import build_config
from core.video_write import write_video
from tests.helpers.tiny_pipeline import make_tiny_pipeline
from tests.unit.test_eval_video import random_clip, save_stand_in
from tokenizer import TokenizerConfig, VideoTokenizer

ROOT = Path(__file__).resolve().parents[2]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(capsys, main, argv, message, code=2) -> None:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tok"
    VideoTokenizer(build_config(TokenizerConfig, [ROOT / "configs/tiny/tokenizer.yaml"])).save_pretrained(out)
    return out


def test_fvd_outputs_never_replace_its_inputs_and_a_corrupt_stats_file_is_named_as_such(tmp_path, capsys):
    """--save-stats onto the --fake stats file replaced them with the real ones before they were read: FVD 0.000
    and exit 0. --json onto a --real stats file replaced it with the report."""
    from tools.eval_video import main

    real = tmp_path / "real"
    for i in range(2):
        write_video(real / f"v{i}.mp4", random_clip(i), fps=8)
    i3d = save_stand_in(tmp_path / "i3d.pt")
    fake = tmp_path / "fake.npz"
    fake.write_bytes(b"stats of the generated set")
    before = _digest(fake)
    common = ["fvd", "--protocol", "quick", "--num-videos", "2", "--i3d", i3d, "--device", "cpu"]
    _refused(capsys, main, [*common, "--real", real, "--fake", fake, "--save-stats", fake], "--save-stats")
    _refused(capsys, main, [*common, "--real", fake, "--fake", real, "--json", fake], "would replace --real")
    assert _digest(fake) == before
    # numpy's message for a file that is no zip advised loading it with pickles allowed
    _refused(capsys, main, [*common, "--real", fake, "--fake", real], "is not a .npz of FVD stats written by")
    _refused(capsys, main, [*common, "--real", real, "--save-stats", tmp_path / "fake.npz" / "real.npz"],
             "--save-stats")  # fmt: skip


def test_eval_tokenizer_and_roundtrip_never_replace_their_inputs(tok, tmp_path, capsys):
    """eval_tokenizer --json onto its --data manifest, and roundtrip --video out/roundtrip.mp4 --out out, exited 0
    with the input replaced; --previews or --out on a file, and --size 100000, failed late or with a traceback."""
    from tools.eval_tokenizer import main as eval_tokenizer
    from tools.roundtrip import main as roundtrip

    video = tmp_path / "w" / "roundtrip.mp4"
    write_video(video, random_clip(0, T=9, H=32, W=32), fps=8)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"path": str(video)}) + "\n")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    before = {p: _digest(p) for p in (video, manifest, afile)}
    base = ["--tokenizer", tok, "--data", manifest, "--num-frames", "9", "--size", "32", "--device", "cpu"]
    _refused(capsys, eval_tokenizer, [*base, "--json", manifest], "would replace --data")
    _refused(capsys, eval_tokenizer, [*base, "--previews", afile], "--previews")
    _refused(capsys, eval_tokenizer, [*base[:-4], "--size", "100000"], "larger than 4096 px a side")
    rt = ["--tokenizer", tok, "--video", video, "--num-frames", "9", "--size", "32"]
    _refused(capsys, roundtrip, [*rt, "--out", video.parent], "would replace --video")
    _refused(capsys, roundtrip, [*rt, "--out", afile], "--out")
    _refused(capsys, roundtrip, [*rt[:-2], "--size", "100000", "--out", tmp_path / "o"], "larger than 4096")
    assert {p: _digest(p) for p in before} == before


def test_output_folders_that_are_files_are_named_before_the_work(tmp_path, capsys):
    """eval_shapes, train and serve said "[Errno 17] File exists" or "[Errno 20] Not a directory" (serve after
    loading and warming the model); report --out onto a folder failed after all its sampling, naming a temp file."""
    from tools.eval_shapes import main as eval_shapes
    from tools.report import main as report
    from tools.serve import main as serve
    from tools.train import main as train

    model = make_tiny_pipeline(tmp_path / "model")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    _refused(capsys, eval_shapes, ["--model", model, "--out", afile], "--out")
    _refused(capsys, train, ["--config", ROOT / "configs/tiny/train_generator.yaml", "--out", afile], "--out")
    _refused(capsys, serve, ["--model", model, "--out", afile, "--port", "0"], "--out")
    (tmp_path / "page.html").mkdir()
    _refused(capsys, report, ["--model", model, "--out", tmp_path / "page.html"], "--out")
    assert afile.read_text() == "mine"


def test_a_cache_with_no_clip_exits_1_and_generate_bounds_num_videos(tok, tmp_path, capsys):
    """Every source quarantined ended "cached 0 clips" with exit 0; --num-videos 100000 spent minutes on paths
    and prompts as one batch."""
    from tools.cache_tokens import main as cache_tokens
    from tools.generate import main as generate

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        (data / f"v{i}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)  # no video inside
    _refused(capsys, cache_tokens, ["--data", data, "--tokenizer", tok, "--out", tmp_path / "cache", "--num-frames",
                                    "9", "--size", "32", "--num-workers", "0", "--no-progress"],
             "no clip was cached from 2 sources; 2 were quarantined", code=1)  # fmt: skip
    _refused(capsys, generate, ["--num-videos", "100000", "--out", tmp_path / "many"], "--num-videos must be >= 1 and")
    assert not (tmp_path / "many").exists()


def test_a_memory_error_is_one_line(capsys):
    """numpy's "Unable to allocate 475. GiB" was a traceback."""
    from core.cli import run_cli

    def main(argv):  # what numpy raises for a --size of 100000 on a 17-frame float32 clip
        raise MemoryError("Unable to allocate 475. GiB for an array with shape (17, 3, 100000, 100000)")

    assert run_cli(main, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (") and len(err.strip().splitlines()) == 1


def test_a_path_of_the_wrong_kind_is_named_as_such(tmp_path, capsys):
    """A folder given as --config and a file given as a cache were said not to exist; a manifest that is not UTF-8
    gave the codec's message without the file's name."""
    from tools.cache_tokens import main as cache_tokens
    from tools.make_shapes import main as make_shapes
    from tools.train import main as train

    afile, bad = tmp_path / "afile", tmp_path / "bad.jsonl"
    afile.write_text("x")
    bad.write_bytes(b'\xff\xfe{"path": "a"}\n')
    _refused(capsys, train, ["--config", tmp_path, "--out", tmp_path / "o"], f"config file '{tmp_path}' is a folder")
    _refused(capsys, cache_tokens, ["verify", afile], "is a file, not a cache folder")
    _refused(capsys, make_shapes, ["analyze", "--manifest", bad], f"manifest '{bad}' is not UTF-8 text")
