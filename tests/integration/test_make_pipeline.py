"""tools/make_pipeline.py: assembles a loadable pipeline directory from separate parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from pipelines import VideoPipeline
from tests.helpers.tiny_pipeline import make_tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_pipeline.py"), *args], capture_output=True, text=True, cwd=ROOT
    )


def test_assembles_fp16_pipeline_that_generates_like_the_parts(tmp_path: Path) -> None:
    src = make_tiny_pipeline(tmp_path / "src")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({"holdout": ["green triangle up"]}))
    cfg = tmp_path / "pipe.yaml"
    te = (src / "text_encoder").resolve()
    cfg.write_text(
        f"num_frames: 9\nfps: 8\ndefault_mode: ar\ntext_encoder:\n  kind: t5\n  path: {te}\n  max_length: 48\n"
    )
    out = tmp_path / "models" / "shapes"
    r = _run(
        "--config",
        str(cfg),
        "--tokenizer",
        str(src / "tokenizer"),
        "--generator",
        f"ar={src / 'generator_ar'}",
        "--generator",
        f"maskgit={src / 'generator_maskgit'}",
        "--shapes-dataset",
        str(tmp_path / "data"),
        "--dtype",
        "float16",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "holdout.json").read_text()) == ["green triangle up"]
    with safe_open(str(out / "generator_ar" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float16}
    size = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    full = sum(p.stat().st_size for p in src.rglob("*.safetensors"))
    assert size < 0.6 * full
    pipe = VideoPipeline.from_pretrained(out)
    assert len(pipe.config.class_names) == 72 and pipe.config.class_names[0] == "a red circle moving left"
    ref = VideoPipeline.from_pretrained(src)
    for mode in ("ar", "maskgit"):
        a = dict(pipe.generators[mode].named_parameters())
        for name, p in ref.generators[mode].named_parameters():
            assert a[name].dtype == torch.float32
            torch.testing.assert_close(a[name], p.half().float())
    # an existing directory is kept unless --force
    r = _run(
        "--tokenizer",
        str(src / "tokenizer"),
        "--generator",
        f"ar={src / 'generator_ar'}",
        "--config",
        str(cfg),
        "--out",
        str(out),
    )
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert (out / "holdout.json").is_file()


def test_refuses_bad_generator_spec_and_vocab_mismatch(tmp_path: Path) -> None:
    src = make_tiny_pipeline(tmp_path / "src")
    r = _run("--tokenizer", str(src / "tokenizer"), "--generator", "ar", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "MODE=DIR" in r.stderr
    levels = tmp_path / "levels.yaml"
    levels.write_text((ROOT / "configs/tiny/tokenizer.yaml").read_text().replace("[4, 4, 4]", "[5, 5, 5]"))
    other = make_tiny_pipeline(tmp_path / "other", tokenizer_yaml=str(levels))
    r = _run(
        "--tokenizer",
        str(other / "tokenizer"),
        "--generator",
        f"ar={src / 'generator_ar'}",
        "--out",
        str(tmp_path / "o"),
    )
    assert r.returncode == 2 and "vocabulary" in r.stderr
    assert not (tmp_path / "o").exists()


def test_refuses_a_mode_given_twice_and_a_dataset_json_that_is_not_one(tmp_path: Path, capsys) -> None:
    """A second --generator for the same mode silently replaced the first; a dataset.json holding a list was an
    AttributeError traceback, and a string holdout became a list of characters. The first case runs as a user
    runs it, in a process of its own; the others call the same ``main`` in this process (3 s less each)."""
    from tools.make_pipeline import main

    src = make_tiny_pipeline(tmp_path / "src")
    gen = f"ar={src / 'generator_ar'}"
    tok = str(src / "tokenizer")
    r = _run("--tokenizer", tok, "--generator", gen, "--generator", gen, "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--generator ar=... is given twice" in r.stderr and "Traceback" not in r.stderr
    for i, text in enumerate(["[1, 2]", '{"holdout": "green triangle up"}', '{"holdout": ["green blob up"]}']):
        (tmp_path / f"ds{i}").mkdir()
        (tmp_path / f"ds{i}" / "dataset.json").write_text(text)
        capsys.readouterr()
        rc = main(["--tokenizer", tok, "--generator", gen, "--shapes-dataset", str(tmp_path / f"ds{i}"),
                   "--out", str(tmp_path / "o")])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_force_never_replaces_its_own_inputs_and_a_relative_text_encoder_is_copied_in(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """--force swapped --out away and deleted it whole, with no check that it held the parts: --out runs (holding
    runs/tok and runs/gen) or --out onto the generator folder deleted the training results. A relative
    text_encoder.path ("inside the pipeline") was looked up in the new --out, so no such pipeline could be made."""
    from tools.make_pipeline import main

    src = make_tiny_pipeline(tmp_path / "runs" / "src")
    tok, gen = src / "tokenizer", src / "generator_ar"
    te = (src / "text_encoder").resolve()
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(f"num_frames: 9\nfps: 8\ndefault_mode: ar\ntext_encoder:\n  kind: t5\n  path: {te}\n"
                   "  max_length: 48\n")  # fmt: skip
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({"holdout": []}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out, named in ((tmp_path / "runs", "the tokenizer"), (gen, "the ar generator"), (tok, "the tokenizer"),
                       (tmp_path / "data", "the shapes dataset"), (te.parent, "the tokenizer")):  # fmt: skip
        capsys.readouterr()
        rc = main(["--config", str(cfg), "--tokenizer", str(tok), "--generator", f"ar={gen}", "--shapes-dataset",
                   str(tmp_path / "data"), "--out", str(out), "--force"])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and f"would replace {named}" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    # a text encoder folder given relative to the working directory is copied into the pipeline, which then loads
    # from anywhere; rebuilding that pipeline with --force takes the encoder from the pipeline it replaces
    monkeypatch.chdir(src)
    cfg.write_text("num_frames: 9\nfps: 8\ndefault_mode: ar\ntext_encoder:\n  kind: t5\n  path: text_encoder\n"
                   "  max_length: 48\n")  # fmt: skip
    out = tmp_path / "pipe"
    assert main(["--config", str(cfg), "--tokenizer", str(tok), "--generator", f"ar={gen}", "--out", str(out)]) == 0
    assert (out / "text_encoder").is_dir()
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(cfg), "--tokenizer", str(tok), "--generator", f"ar={gen}", "--out", str(out),
                 "--force", "--dtype", "float16"]) == 0  # fmt: skip
    assert VideoPipeline.from_pretrained(out).text_encoder is not None
    cfg.write_text(cfg.read_text().replace("path: text_encoder", "path: ../text_encoder"))
    capsys.readouterr()
    assert main(["--config", str(cfg), "--tokenizer", str(tok), "--generator", f"ar={gen}", "--out", str(out),
                 "--force"]) == 2  # fmt: skip
    assert "must be absolute or a folder inside the pipeline" in capsys.readouterr().err


def test_class_names_must_name_every_class_of_a_class_model(tmp_path: Path) -> None:
    """4 names for 3 classes, or 2, built and loaded; a label past the names, or a valid one past them, failed
    only when asked for."""
    import dataclasses

    from pipelines.config import check_parts

    src = make_tiny_pipeline(tmp_path / "src", cond="class", num_classes=3)
    pipe = VideoPipeline.from_pretrained(src)
    for names in (("a", "b"), ("a", "b", "c", "d")):
        config = dataclasses.replace(pipe.config, class_names=names)
        try:
            check_parts(pipe.tokenizer, pipe.generators, pipe.text_encoder, config)
        except ValueError as err:
            assert f"class_names has {len(names)} names, but the" in str(err) and "has 3 classes" in str(err)
        else:
            raise AssertionError(f"{len(names)} names for 3 classes were accepted")
    check_parts(pipe.tokenizer, pipe.generators, pipe.text_encoder, dataclasses.replace(pipe.config, class_names=()))


def test_force_replaces_a_pipeline_or_an_empty_folder_but_no_other_folder_or_file(tmp_path: Path, capsys) -> None:
    """--force replaced any --out whole: `--out .` from a checkout, or `--out models`, deleted everything there."""
    from tools.make_pipeline import main

    src = make_tiny_pipeline(tmp_path / "src", cond="class", num_classes=3)
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text("num_frames: 9\nfps: 8\ndefault_mode: ar\nclass_names: [a, b, c]\n")
    args = ["--config", str(cfg), "--tokenizer", str(src / "tokenizer"), "--generator", f"ar={src / 'generator_ar'}",
            "--force"]  # fmt: skip
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("keep me")
    (tmp_path / "notes.txt").write_text("keep me too")
    for out, message in ((mine, "is a folder of other files"), (tmp_path / "notes.txt", "is a file")):
        capsys.readouterr()
        assert main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert (mine / "README.md").read_text() == "keep me" and (tmp_path / "notes.txt").read_text() == "keep me too"
    (tmp_path / "empty").mkdir()
    assert main([*args, "--out", str(tmp_path / "empty")]) == 0
    assert main([*args, "--out", str(tmp_path / "empty")]) == 0  # now a pipeline folder: replaced again


def test_one_mode_takes_a_template_yaml_that_also_sets_the_other_mode(tmp_path: Path) -> None:
    """README's stage-4 command (configs/pipeline/shapes.yaml, one maskgit export, default_mode=maskgit) failed:
    the YAML's default_orders.ar and sampling.ar named a mode the pipeline does not have."""
    src = make_tiny_pipeline(tmp_path / "src")
    cfg = tmp_path / "pipe.yaml"
    te = (src / "text_encoder").resolve()
    cfg.write_text(
        f"num_frames: 9\nfps: 8\ndefault_mode: ar\ndefault_orders:\n  ar: frame\n  maskgit: frame\nsampling:\n"
        f"  ar:\n    temperature: 0.7\n  maskgit:\n    steps: 3\n  maskgit/clip:\n    steps: 5\n"
        f"text_encoder:\n  kind: t5\n  path: {te}\n  max_length: 48\n"
    )
    out = tmp_path / "mine"
    r = _run("--config", str(cfg), "--tokenizer", str(src / "tokenizer"), "--generator",
             f"maskgit={src / 'generator_maskgit'}", "--out", str(out), "default_mode=maskgit")  # fmt: skip
    assert r.returncode == 0, r.stderr
    made = VideoPipeline.from_pretrained(out).config
    assert made.default_orders == {"maskgit": "frame"} and set(made.sampling) == {"maskgit", "maskgit/clip"}


def test_the_templates_default_mode_goes_with_its_mode_unless_an_override_names_it(tmp_path: Path, capsys) -> None:
    """The template's other per-mode settings went when their mode was not given, but its default_mode stayed:
    a maskgit-only build from a YAML saying default_mode: ar failed, and the message said nothing of a fix."""
    from tools.make_pipeline import main

    src = make_tiny_pipeline(tmp_path / "src")
    cfg = tmp_path / "pipe.yaml"
    te = (src / "text_encoder").resolve()
    cfg.write_text(f"num_frames: 9\nfps: 8\ndefault_mode: ar\ntext_encoder:\n  kind: t5\n  path: {te}\n"
                   "  max_length: 48\n")  # fmt: skip
    args = ["--config", str(cfg), "--tokenizer", str(src / "tokenizer"), "--generator",
            f"maskgit={src / 'generator_maskgit'}"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert VideoPipeline.from_pretrained(tmp_path / "one").config.default_mode == "maskgit"
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "asked"), "default_mode=ar"]) == 2  # what the user asked for
    assert "default_mode 'ar' is not one of this pipeline's modes ['maskgit']" in capsys.readouterr().err
