"""The shapes world (videodata.shapes.render / .dataset, videoeval.shapes_analyzer) and tools/make_shapes.py:
rendered clips match their attributes, determinism, labels and captions, holdout, the analyzer's
accuracy (in memory and through mp4), and the CLI."""

import colorsys
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import videodata.shapes.dataset as dataset
from core.cli import run_cli
from tools.make_shapes import main
from videodata.shapes.dataset import class_of, clip_spec, load_clip, parse_holdout, render_dataset
from videodata.shapes.render import (
    ATTRIBUTES,
    COLORS,
    MOTIONS,
    NUM_CLASSES,
    NUM_FRAMES,
    SHAPES,
    SIZE,
    attributes_of,
    caption_for,
    label_of,
    render_clip,
)
from videoeval.shapes_analyzer import analyze

HOLDOUT = "green triangle up, blue circle left"


def chroma(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(np.int16)
    return f.max(axis=-1) - f.min(axis=-1)  # (T, H, W)


def blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of each frame (edges clamped)."""
    r = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    x = np.pad(frames.astype(np.float64), ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    x = sum(w * x[:, i : i + frames.shape[1]] for i, w in enumerate(k))  # rows
    x = sum(w * x[:, :, i : i + frames.shape[2]] for i, w in enumerate(k))  # columns
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ rendering


@pytest.mark.parametrize("seed", [0, 1])
def test_rendered_clips_match_their_attributes(seed):
    """Analyzer-independent: in frame, moving the right way, right hue, right size."""
    labels = []
    for i in range(NUM_CLASSES):
        spec, _ = clip_spec(i, seed)
        label = class_of(i, seed)
        color, shape, motion = attributes_of(label)
        assert (spec.color, spec.shape, spec.motion, spec.label) == (color, shape, motion, label)
        labels.append(label)
        frames = render_clip(spec)
        assert frames.shape == (NUM_FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8
        c = chroma(frames)
        border = np.concatenate([c[:, 0], c[:, -1], c[:, :, 0], c[:, :, -1]], axis=1)
        assert border.max() < 30, "the object must stay inside the frame"
        mask = c > 0.5 * c.max(axis=(1, 2), keepdims=True)  # (T, H, W)
        assert mask.any(axis=(1, 2)).all()
        # Size: mask area near the ideal area, and the size drawn in range.
        assert 10 <= spec.size <= 18 and 1.0 <= spec.speed <= 2.5
        ideal = {"circle": np.pi / 4, "square": 1.0, "triangle": np.sqrt(3) / 4}[shape] * spec.size**2
        area = mask.sum(axis=(1, 2))
        assert np.all(np.abs(area / ideal - 1) < 0.2), (label, area.min(), area.max(), ideal)
        # Motion: centroid displacement along the right axis and sign, about speed * 16.
        ys, xs = np.mgrid[0:SIZE, 0:SIZE]
        cx = (mask * xs).sum(axis=(1, 2)) / area
        cy = (mask * ys).sum(axis=(1, 2)) / area
        d = np.array([cx[-1] - cx[0], cy[-1] - cy[0]])
        step = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[motion]
        np.testing.assert_allclose(d, np.array(step) * spec.speed * (NUM_FRAMES - 1), atol=1.0)
        assert np.all(np.diff(cx if step[0] else cy) * (step[0] or step[1]) > 0), "monotone motion"
        # Color: hue of the object's interior within 8 degrees of the named hue.
        rgb = frames[mask].astype(np.float64).mean(axis=0) / 255
        hue = 360 * colorsys.rgb_to_hsv(*rgb)[0]
        target = 60 * COLORS.index(color)
        assert abs((hue - target + 180) % 360 - 180) < 8, (color, hue)
        if shape == "triangle":  # upright: more mass in the lower half of its rows
            rows = np.flatnonzero(mask[0].any(axis=1))
            mid = (rows[0] + rows[-1] + 1) / 2
            assert mask[0, : int(mid)].sum() < mask[0, int(np.ceil(mid)) :].sum()
        # Near-black background.
        assert np.median(frames[~mask]) < 15
    assert sorted(labels) == list(range(NUM_CLASSES))


def test_classes_are_balanced_in_every_block_of_72():
    labels = [class_of(i, 0) for i in range(3 * NUM_CLASSES)]
    assert np.bincount(labels, minlength=NUM_CLASSES).tolist() == [3] * NUM_CLASSES
    assert len(set(labels[:24])) == 24 and len({attributes_of(x)[0] for x in labels[:24]}) > 2  # not all red
    assert labels[:NUM_CLASSES] != [class_of(i, 1) for i in range(NUM_CLASSES)]  # the order follows the seed


def test_labels_round_trip_and_reject_bad_input():
    seen = set()
    for label in range(NUM_CLASSES):
        attrs = attributes_of(label)
        assert label_of(*attrs) == label
        seen.add(attrs)
    assert len(seen) == 72 == len(COLORS) * len(SHAPES) * len(MOTIONS)
    assert ATTRIBUTES["color"] == COLORS and ATTRIBUTES["motion"] == MOTIONS
    for bad in (-1, 72, 3.0, True):
        with pytest.raises(ValueError):
            attributes_of(bad)
    with pytest.raises(ValueError, match="purple"):
        label_of("purple", "circle", "left")


def test_captions_name_color_shape_and_one_direction():
    rng = np.random.default_rng(0)
    captions = set()
    for label in range(NUM_CLASSES):
        color, shape, motion = attributes_of(label)
        for _ in range(8):
            cap = caption_for(color, shape, motion, rng)
            words = re.findall(r"[a-z]+", cap)
            assert color in words and shape in words, cap
            assert [m for m in MOTIONS if m in cap] == [motion], cap
            captions.add(cap.replace(color, "C").replace(shape, "S"))
    assert len(captions) >= 24  # several templates x verbs x direction phrases
    with pytest.raises(ValueError):
        caption_for("red", "hexagon", "up", rng)


def test_parse_holdout():
    assert parse_holdout(HOLDOUT) == (("green", "triangle", "up"), ("blue", "circle", "left"))
    assert parse_holdout(["up triangle green", "green triangle up"]) == (("green", "triangle", "up"),)
    assert parse_holdout(None) == parse_holdout("") == ()
    for bad in ("purple circle left", "red circle", "red blue circle left", "red circle left up"):
        with pytest.raises(ValueError):
            parse_holdout(bad)


# ------------------------------------------------------------------ dataset files


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_is_deterministic_and_independent_of_workers(tmp_path):
    render_dataset(tmp_path / "a", 6, seed=7, format="png", num_workers=1)
    render_dataset(tmp_path / "b", 6, seed=7, format="png", num_workers=2)
    render_dataset(tmp_path / "c", 6, seed=8, format="png")
    a, b, c = (tree_bytes(tmp_path / n) for n in "abc")
    assert a == b, "same seed must give the same manifests and frames"
    assert a["manifest.jsonl"] != c["manifest.jsonl"], "captions depend on the seed"
    assert all(a[f"clips/{i:06d}/00.png"] != c[f"clips/{i:06d}/00.png"] for i in range(6)), "frames depend on the seed"
    frames = load_clip(tmp_path / "a" / "clips" / "000002")
    np.testing.assert_array_equal(frames, render_clip(clip_spec(2, 7)[0]))  # PNG is lossless
    assert not [p for p in (tmp_path / "a").rglob("*") if ".tmp" in p.name]
    for name in ("m1", "m2"):  # mp4: same manifest and the same decoded frames
        render_dataset(tmp_path / name, 2, seed=7)
    assert (tmp_path / "m1" / "manifest.jsonl").read_bytes() == (tmp_path / "m2" / "manifest.jsonl").read_bytes()
    for i in range(2):
        np.testing.assert_array_equal(*(load_clip(tmp_path / m / f"clips/{i:06d}.mp4") for m in ("m1", "m2")))


def fail_png_write_at(monkeypatch, name: str) -> None:
    """Writing the PNG folder of clip ``name`` raises a full-disk OSError (the others are written)."""
    real = dataset._write_png_folder

    def failing(folder, frames):
        if folder.name == name:
            raise OSError("disk full")
        real(folder, frames)

    monkeypatch.setattr(dataset, "_write_png_folder", failing)


def test_partial_render_leaves_no_manifest(tmp_path, monkeypatch):
    out = tmp_path / "d"
    render_dataset(out, 3, format="png")
    with pytest.raises(ValueError, match="overwrite"):
        render_dataset(out, 3, format="png")
    fail_png_write_at(monkeypatch, "000002")
    with pytest.raises(OSError, match="disk full"):
        render_dataset(out, 4, format="png", overwrite=True)
    assert not (out / "manifest.jsonl").exists() and not (out / "manifest.csv").exists()
    monkeypatch.undo()
    render_dataset(out, 4, format="png")  # the interrupted render of ours is rerun without --overwrite
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4


def test_render_refuses_a_folder_that_is_not_one_of_its_datasets(tmp_path):
    """Without --overwrite it checked only manifest.jsonl: a folder holding the user's own manifest.csv (the
    README's CSV manifest format) and dataset.json lost both, and its clips/ was rendered into."""
    out = tmp_path / "mine"
    (out / "clips").mkdir(parents=True)
    (out / "clips" / "holiday.mp4").write_bytes(b"h")
    (out / "manifest.csv").write_text("clips/holiday.mp4,my holiday,0\n")
    (out / "dataset.json").write_text('{"my": "notes"}')
    with pytest.raises(ValueError, match="already holds manifest.csv, dataset.json, clips/"):
        render_dataset(out, 2)
    assert (out / "manifest.csv").read_text() == "clips/holiday.mp4,my holiday,0\n"
    assert (out / "dataset.json").read_text() == '{"my": "notes"}' and (out / "clips" / "holiday.mp4").exists()


def test_overwriting_a_dataset_leaves_none_of_its_clips(tmp_path):
    """6 clips, then 2 with --overwrite: clips 2-5 stayed in clips/ and a folder-based --data read them."""
    out = tmp_path / "d"
    render_dataset(out, 6, format="png")
    render_dataset(out, 2, overwrite=True)  # fewer clips, and mp4 instead of png folders
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["000000.mp4", "000001.mp4"]
    assert not [p for p in out.iterdir() if p.name.startswith(".clips")]


def test_rerunning_an_interrupted_render_leaves_none_of_its_clips(tmp_path, monkeypatch):
    """Old clips were cleared only when manifest.jsonl existed: a render stopped at clip 5, rerun with 2 clips (with
    or without --overwrite), kept clips 2-4 beside the new manifest."""
    out = tmp_path / "d"
    fail_png_write_at(monkeypatch, "000005")
    with pytest.raises(OSError, match="disk full"):
        render_dataset(out, 6, format="png", num_workers=1)
    monkeypatch.undo()
    assert len(list((out / "clips").iterdir())) >= 5
    render_dataset(out, 2, format="png")
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["000000", "000001"]


def test_a_symlinked_clips_folder_is_refused_before_anything_is_deleted(tmp_path):
    """rmtree raised on the link (a traceback, exit 1) after the old manifests were already deleted."""
    out, elsewhere = tmp_path / "d", tmp_path / "elsewhere"
    render_dataset(out, 2, format="png")
    (out / "clips").rename(elsewhere)
    (out / "clips").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="is a symbolic link to clips that rendering would replace"):
        render_dataset(out, 2, format="png", overwrite=True)
    assert (out / "manifest.jsonl").is_file() and sorted(p.name for p in elsewhere.iterdir()) == ["000000", "000001"]


def test_seeds_beyond_32_bits_and_an_all_held_out_render_are_refused(tmp_path):
    """numpy splits a seed into 32-bit words: clip 0 of seed 2**32 + 5 was clip 1 of seed 5, the same draws. And a
    holdout covering every class of a short render wrote an empty manifest.jsonl and exited 0."""
    spec = lambda i, seed: dataset.clip_spec(i, seed)[0]  # noqa: E731
    assert spec(0, 2**32 - 1) != spec(1, 0)  # the largest seed is accepted
    for bad in (2**32, 2**32 + 5, -1):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 4294967295\]"):
            spec(0, bad)
        with pytest.raises(ValueError, match="seed must be"):
            render_dataset(tmp_path / "x", 1, seed=bad)
    label = dataset.class_of(0, 0)
    with pytest.raises(ValueError, match="cover every class of the 1 clip"):
        render_dataset(tmp_path / "x", 1, seed=0, holdout=" ".join(dataset.attributes_of(label)))
    assert not (tmp_path / "x").exists()


def test_a_shapes_manifest_path_must_be_a_string(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"path": 5, "color": "red", "shape": "circle", "motion": "up"}\n')
    with pytest.raises(ValueError, match="line 1: path must be a non-empty string, got 5"):
        dataset.read_manifest(tmp_path / "bad.jsonl")
    # a null attribute passed and was a TypeError traceback in `make_shapes.py analyze --manifest`
    (tmp_path / "bad.jsonl").write_text('{"path": "a.mp4", "color": null, "shape": "circle", "motion": "up"}\n')
    with pytest.raises(ValueError, match="line 1: color must be a non-empty string, got None"):
        dataset.read_manifest(tmp_path / "bad.jsonl")


@pytest.fixture(scope="module")
def mp4_dataset(tmp_path_factory):
    """72 clips, one per class, rendered to mp4 through the CLI, with two held-out classes."""
    out = tmp_path_factory.mktemp("shapes") / "data"
    argv = ["render", "--out", str(out), "--num-clips", "72", "--seed", "3", "--holdout", HOLDOUT, "--num-workers", "2"]
    rc = main(argv)
    assert rc == 0
    return out


def test_manifests_and_holdout(mp4_dataset):
    rows = [json.loads(line) for line in (mp4_dataset / "manifest.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (mp4_dataset / "holdout.jsonl").read_text().splitlines()]
    combos = {("green", "triangle", "up"), ("blue", "circle", "left")}
    assert len(rows) == 70 and len(held) == 2
    assert {(r["color"], r["shape"], r["motion"]) for r in held} == combos
    assert not combos & {(r["color"], r["shape"], r["motion"]) for r in rows}
    assert sorted(r["label"] for r in rows + held) == list(range(72))  # balanced: one per class
    for r in rows + held:
        assert set(r) == {"path", "caption", "label", "color", "shape", "motion", "split"}
        assert r["split"] == ("holdout" if r in held else "train")
        assert label_of(r["color"], r["shape"], r["motion"]) == r["label"]
        assert r["color"] in r["caption"] and r["shape"] in r["caption"]
        assert (mp4_dataset / r["path"]).is_file() and r["path"].endswith(".mp4")
    csv_lines = (mp4_dataset / "manifest.csv").read_text().splitlines()
    assert csv_lines[0] == "path,caption,label,color,shape,motion,split" and len(csv_lines) == 71
    assert json.loads((mp4_dataset / "dataset.json").read_text())["num_holdout"] == 2


# ------------------------------------------------------------------ analyzer


def test_analyzer_accuracy_in_memory():
    right = 0
    for i in range(300):
        spec, _ = clip_spec(i, 11)
        a = analyze(render_clip(spec))
        right += a.matches(spec.color, spec.shape, spec.motion)
        assert a.label in (None, *range(NUM_CLASSES)) and 0.0 <= a.confidence <= 1.0
    assert right / 300 >= 0.99, right


def test_analyzer_accuracy_after_mp4(mp4_dataset):
    texts = [(mp4_dataset / name).read_text() for name in ("manifest.jsonl", "holdout.jsonl")]
    rows = [json.loads(line) for text in texts for line in text.splitlines()]
    results = [analyze(load_clip(mp4_dataset / r["path"])) for r in rows]
    right = sum(a.matches(r["color"], r["shape"], r["motion"]) for a, r in zip(results, rows))
    assert len(rows) == 72 and right / 72 >= 0.99, right
    assert np.median([a.confidence for a in results]) > 0.7


def test_analyzer_is_robust_to_blur_noise_color_shift_and_garbage_frames():
    rng = np.random.default_rng(0)
    right = 0
    for i in range(0, 72, 3):
        spec, _ = clip_spec(i, 5)
        f = blur(render_clip(spec), 1.0).astype(np.float64)
        f = f * rng.uniform(0.8, 1.05, size=3) + rng.uniform(-5, 12, size=3)  # per-channel shift
        f = f + rng.normal(0, 8, size=f.shape)
        f = np.clip(f, 0, 255).astype(np.uint8)
        f[rng.choice(NUM_FRAMES, 2, replace=False)] = rng.integers(0, 256, size=(2, SIZE, SIZE, 3))  # garbage
        a = analyze(f)
        right += a.matches(spec.color, spec.shape, spec.motion)
    assert right >= 23, right  # of 24


@pytest.mark.parametrize("first,second", [("red", "yellow"), ("yellow", "red"), ("magenta", "red"), ("blue", "cyan")])
def test_a_clip_split_between_two_colours_reads_as_neither_and_a_majority_wins(first, second):
    """The colour nearest to the mean of all frames' hues read an even split between neighbours (30 degrees from
    each) as whichever comes first in COLORS: right when that one was asked for, wrong otherwise."""
    import dataclasses

    from videodata.shapes.render import HUES, sample_spec

    spec = sample_spec(first, "square", "left", np.random.default_rng(5))
    rgb = tuple(255 * v for v in colorsys.hsv_to_rgb(HUES[second] / 360, 1, 1))
    a, b = render_clip(spec), render_clip(dataclasses.replace(spec, color=second, rgb=rgb))
    even = np.concatenate([a[:8], b[8:16]])  # 8 frames each
    assert analyze(even).color is None and analyze(even[::-1]).color is None
    assert analyze(even).shape == "square"  # the rest is still read
    assert analyze(np.concatenate([a[:9], b[9:16]])).color == first  # 9 of 16
    assert analyze(np.concatenate([a[:7], b[7:16]])).color == second


@pytest.mark.parametrize("first,second", [("square", "circle"), ("circle", "square"), ("triangle", "circle"),
                                          ("square", "triangle")])  # fmt: skip
def test_a_clip_split_between_two_shapes_reads_as_neither_and_a_majority_wins(first, second):
    """The per-frame shape votes' argmax gave a tie to the shape listed first in SHAPES: a square turning into a
    circle half-way read "circle", right for a circle prompt and wrong for a square one."""
    import dataclasses

    from videodata.shapes.render import sample_spec

    spec = sample_spec("red", first, "right", np.random.default_rng(5))
    a, b = render_clip(spec), render_clip(dataclasses.replace(spec, shape=second))
    assert analyze(a).shape == first and analyze(b).shape == second
    even = np.concatenate([a[:8], b[8:16]])  # 8 frames each
    assert analyze(even).shape is None and analyze(even[::-1]).shape is None
    assert analyze(even).color == "red"  # the rest is still read
    assert analyze(np.concatenate([a[:9], b[9:16]])).shape == first  # 9 of 16
    assert analyze(np.concatenate([a[:7], b[7:16]])).shape == second


def test_analyzer_without_an_object_returns_none():
    rng = np.random.default_rng(0)
    videos = {
        "black": np.zeros((NUM_FRAMES, SIZE, SIZE, 3), np.uint8),
        "uniform noise": rng.integers(0, 256, (NUM_FRAMES, SIZE, SIZE, 3)).astype(np.uint8),
        "dark noise": np.clip(rng.normal(10, 8, (NUM_FRAMES, SIZE, SIZE, 3)), 0, 255).astype(np.uint8),
        "gray": np.full((NUM_FRAMES, SIZE, SIZE, 3), 128, np.uint8),
    }
    for name, frames in videos.items():
        a = analyze(frames)
        assert (a.color, a.shape, a.motion, a.label) == (None, None, None, None), name
        assert a.confidence < 0.1, name
    # A still object: color and shape are read, motion is not.
    spec, _ = clip_spec(5, 0)
    a = analyze(np.repeat(render_clip(spec)[:1], NUM_FRAMES, axis=0))
    assert (a.color, a.shape, a.motion) == (spec.color, spec.shape, None) and a.confidence == 0.0


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 16, 16), np.uint8), np.zeros((4, 16, 16, 4), np.uint8), np.zeros((4, 16, 16, 3), np.float32),
     np.zeros((0, 16, 16, 3), np.uint8), [[[[0, 0, 0]]]]],
)  # fmt: skip
def test_analyzer_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        analyze(bad)


# ------------------------------------------------------------------ CLI


def test_cli_analyze(mp4_dataset, capsys):
    row = json.loads((mp4_dataset / "manifest.jsonl").read_text().splitlines()[0])
    clip = mp4_dataset / row["path"]
    assert main(["analyze", str(clip)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    words = f"{row['color']} {row['shape']} {row['motion']}"
    assert out == [f"{clip}  {words}  confidence={analyze(load_clip(clip)).confidence:.3f}"]
    assert main(["analyze", "--json", "--manifest", str(mp4_dataset / "holdout.jsonl")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["correct"] for r in lines[:-1]] == [True, True]
    assert lines[-1]["accuracy"]["all"] == 1.0
    (tmp := mp4_dataset.parent / "empty.jsonl").write_text("")
    assert main(["analyze", "--manifest", str(tmp)]) == 2  # "0/0 clips right" and exit 0 before
    assert "lists no clips" in capsys.readouterr().err


def test_cli_bad_args_exit_2_with_one_line(tmp_path, capsys, repo_root):
    cases = [
        ["render", "--out", str(tmp_path / "a"), "--num-clips", "0"],
        ["render", "--out", str(tmp_path / "b"), "--num-clips", "4", "--num-workers", "0"],
        ["analyze", str(tmp_path / "missing.mp4")],
        ["analyze"],
        ["render", "--out", str(tmp_path / "e"), "--num-clips", "many"],
        ["render", "--num-clips", "4"],
    ]
    for argv in cases:
        assert run_cli(main, argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), (argv, err)
    assert not (tmp_path / "a" / "manifest.jsonl").exists()
    proc = subprocess.run(
        [sys.executable, str(repo_root / "tools/make_shapes.py"), "render", "--out", str(tmp_path / "c"),
         "--num-clips", "4", "--holdout", "purple circle left"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "purple" in errors[0] and "Traceback" not in proc.stderr, proc.stderr


def test_several_captions_per_clip_are_distinct_keep_the_first_and_reach_the_trainer(tmp_path):
    from videodata.cache.sources import discover_sources

    one = render_dataset(tmp_path / "one", 8, seed=3, format="png")
    many = render_dataset(tmp_path / "many", 8, seed=3, format="png", captions_per_clip=4)
    rows_one = [json.loads(line) for line in one.manifest.read_text().splitlines()]
    rows_many = [json.loads(line) for line in many.manifest.read_text().splitlines()]
    for a, b in zip(rows_one, rows_many):
        assert "captions" not in a and "caption" not in b
        assert b["captions"][0] == a["caption"] and len(set(b["captions"])) == 4
        assert all(b["color"] in c and b["shape"] in c for c in b["captions"])
    _, sources = discover_sources(many.manifest)
    assert [s.captions for s in sources] == [tuple(r["captions"]) for r in sorted(rows_many, key=lambda r: r["path"])]
    assert "caption" in (tmp_path / "many" / "manifest.csv").read_text().splitlines()[0]
    with pytest.raises(ValueError, match="captions_per_clip"):
        render_dataset(tmp_path / "bad", 2, captions_per_clip=0)


def test_more_captions_per_clip_than_a_class_has_are_refused(tmp_path):
    """--captions-per-clip 500 gave the 168 that exist while dataset.json recorded 500."""
    with pytest.raises(ValueError, match="captions_per_clip must be at most"):
        render_dataset(tmp_path / "d", 2, captions_per_clip=500)
    assert not (tmp_path / "d").exists()


def test_a_holdout_that_is_not_a_string_or_a_list_is_one_value_error():
    with pytest.raises(ValueError, match="holdout must be a comma-separated string or a list"):  # was a TypeError
        dataset.parse_holdout(5)
