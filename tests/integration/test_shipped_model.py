"""The shipped default model (models/shapes): generate.py with no --model, end to end."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from core.video_io import read_video
from pipelines import DEFAULT_MODEL_DIR as DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[2]


def generate(*args, cwd, threads=None):
    """``generate.py ARGS --quiet`` in a fresh process. Two of them at a time on 2 cores each take ``threads=1``: with
    torch's default of one thread per core they ran ~5x slower (4 threads on 2 cores)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "generate.py"), *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=cwd,
    )


def test_shipped_model_is_complete_and_small():
    assert (DEFAULT_MODEL / "pipeline.yaml").is_file() and (DEFAULT_MODEL / "MODEL_CARD.md").is_file()
    assert json.loads((DEFAULT_MODEL / "holdout.json").read_text())
    total = sum(p.stat().st_size for p in DEFAULT_MODEL.rglob("*.safetensors"))
    assert total <= 40e6


def test_default_prompt_writes_a_17_frame_64px_mp4_and_repeats_with_the_seed(tmp_path):
    with ThreadPoolExecutor(max_workers=2) as pool:  # two processes, two cores; each must give the same video
        first, again = pool.map(
            lambda args: generate("--prompt", "a red circle moving left", *args, cwd=tmp_path, threads=1),
            [(), ("--out", str(tmp_path / "again.mp4"))],
        )
    assert first.returncode == 0, first.stderr
    video = tmp_path / "outputs" / "video.mp4"
    a = read_video(video)
    assert a.shape == (17, 64, 64, 3) and (tmp_path / "outputs" / "video.png").is_file()
    assert "sampling" in first.stdout and "decoding" in first.stdout
    assert again.returncode == 0, again.stderr
    assert np.array_equal(a, read_video(tmp_path / "again.mp4"))


@pytest.mark.parametrize(
    "args",
    [
        ("--mode", "ar", "--order", "frame", "--prompt", "a blue square moving up"),
        ("--mode", "maskgit", "--order", "cube", "--label", "5"),
    ],
)
def test_both_modes_and_labels(tmp_path, args):
    proc = generate(*args, "--out", str(tmp_path / "v.mp4"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert read_video(tmp_path / "v.mp4").shape == (17, 64, 64, 3)


def test_unsupported_combination_and_too_long_prompt_are_refused(tmp_path):
    cases = [
        (("--mode", "ar", "--order", "clip"), "supports orders"),
        (("--prompt", "a red circle moving left " * 6), "max_length=16"),
        (("--label", "72"), "valid class ids are 0..71"),
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        out = str(tmp_path / "v.mp4")
        procs = list(pool.map(lambda case: generate(*case[0], "--out", out, cwd=tmp_path, threads=1), cases))
    for proc, (_, needle) in zip(procs, cases):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and needle in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one line: no loading bars before it
    assert not (tmp_path / "v.mp4").exists()


def test_an_unreadable_video_to_continue_is_one_line_and_exit_2(tmp_path):
    """decord's C++ logging printed two more lines for a file that does not open."""
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"junk" * 100)
    proc = generate("--video", str(junk), "--context-frames", "5", "--out", str(tmp_path / "v.mp4"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot decode"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "v.mp4").exists()


# MaskGIT's case is slow (~40 s on 2 cores, ~80 s on one thread); the default run covers its shipped weights through
# generate.py in test_both_modes_and_labels.
@pytest.mark.parametrize("mode", ["ar", pytest.param("maskgit", marks=pytest.mark.slow)])
def test_shipped_model_follows_prompts_and_continues_clips(mode):
    """Prompt following, not only shapes: 16 captions over 16 classes, judged by the analyzer from mp4 files. Measured
    adherence is ~98% (model card), so requiring 12 of 16 leaves a wide margin for other CPUs; a model that
    ignored its prompt would get ~1/72 of them right. Continuations of 8 fresh clips keep the clip's attributes in
    at least 6 of 8 (measured 100% with the caption)."""
    import torch

    from pipelines import VideoPipeline
    from videodata.shapes.render import NUM_CLASSES, attributes_of, class_caption
    from videoeval.conditioning import as_received, fresh_clips
    from videoeval.shapes_analyzer import analyze

    pipe = VideoPipeline.from_pretrained(DEFAULT_MODEL)
    labels = [(5 * i) % NUM_CLASSES for i in range(16)]
    out = pipe([class_caption(c) for c in labels], mode=mode, generator=torch.Generator().manual_seed(11))
    frames = as_received(out.frames, out.fps)
    right = sum(analyze(f).matches(*attributes_of(c)) for f, c in zip(frames, labels))
    assert right >= 12, f"{mode}: {right} of 16 videos show their prompt"
    clips = fresh_clips(8, seed=7)
    out = pipe([class_caption(s.label) for s, _ in clips], video=[f[:5] for _, f in clips], context_frames=5,
               num_frames=17, mode=mode, generator=torch.Generator().manual_seed(12))  # fmt: skip
    frames = as_received(out.frames, out.fps)
    kept = sum(analyze(f).matches(s.color, s.shape, s.motion) for f, (s, _) in zip(frames, clips))
    assert kept >= 6, f"{mode}: {kept} of 8 continuations keep their clip's attributes"


def test_the_default_generate_path_imports_no_heavy_package(tmp_path):
    """generate.py with the defaults must not import transformers, deepspeed, matplotlib, av or torch._dynamo:
    each costs 0.3-1.7 s of a 3.5 s budget (bench/README.md)."""
    code = (
        "import sys\n"
        "from tools.generate import main\n"
        f"assert main(['--quiet', '--out', {str(tmp_path / 'v.mp4')!r}]) == 0\n"
        "heavy = ('transformers', 'deepspeed', 'matplotlib', 'av', 'torch._dynamo')\n"
        "print(sorted(h for h in heavy if h in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_generate_py_imports_without_the_garbage_collector_and_runs_with_it():
    """generate.py imports with the collector off (each full collection walks torch's ~170k objects): main must
    run with it on again, or a long generation would never free reference cycles, and with the imported
    objects frozen, or every later full collection walks them again."""
    code = (
        "import gc, runpy, sys\n"
        "import tools.generate\n"
        "tools.generate.main = lambda: print(gc.isenabled(), gc.get_freeze_count()) or 0\n"
        "sys.argv = ['generate.py']\n"
        "runpy.run_path('generate.py', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    enabled, frozen = out.stdout.split()
    assert enabled == "True" and int(frozen) > 50_000
