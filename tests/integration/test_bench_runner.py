"""bench/run.py: the table and JSON format, skipped peers, and (slow) a real quick run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run as runner
from bench.table import format_table

ROOT = Path(__file__).resolve().parents[2]


def test_table_and_skip_records(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "VENV_PYTHON", tmp_path / "no-venv" / "python")
    records = runner.collect(["tokenizer"], quick=True)
    assert records[0]["name"] == "tokenizer: skipped" and "bench/setup_env.sh" in records[0]["note"]
    rows = [{"name": "x", "ours": 2.0, "peer": 1.0, "unit": "it/s", "ratio": 2.0, "goal": ">= 1.0", "met": True}]
    text = format_table(rows)
    head = ["benchmark", "ours", "peer/floor", "unit", "ratio", "goal", "met"]
    assert [c.strip() for c in text.splitlines()[0].split("|")[1:-1]] == head
    assert [c.strip() for c in text.splitlines()[2].split("|")[1:-1]] == ["x", "2", "1", "it/s", "2", ">= 1.0", "yes"]


def test_one_number_format_and_right_aligned_numbers():
    rows = [
        {
            "name": "encode",
            "ours": 12345.6,
            "peer": 0.01234,
            "unit": "",
            "ratio": None,
            "goal": 1.5,
            "goal_op": "<=",
            "met": False,
        }
    ]
    head, rule, row = format_table(rows).splitlines()
    assert [c.strip() for c in row.split("|")[1:-1]] == ["encode", "12,346", "0.0123", "", "-", "<= 1.5", "NO"]
    assert rule.split("|")[2].endswith(":") and not rule.split("|")[1].endswith(":")  # numbers right, names left


def test_numeric_goals_carry_their_direction():
    assert runner.normalize_goal({"goal": 1.1, "goal_op": "<="})["goal"] == "<= 1.1"
    assert runner.normalize_goal({"goal": 2.0})["goal"] == ">= 2"
    assert runner.normalize_goal({"goal": ">= 0.8"})["goal"] == ">= 0.8"
    assert "goal_op" not in runner.normalize_goal({"goal": None, "goal_op": "<="})


def test_unknown_benchmark_exits_2():
    cmd = [sys.executable, str(ROOT / "bench/run.py"), "--only", "nope"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown benchmark"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("decoding_products", ["--threads", "-1"], "argument --threads: must be >= 1, got -1"),
        ("generator_bench", ["--threads", "0"], "argument --threads: must be >= 1, got 0"),
        ("generator_bench", ["--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
        ("generator_bench", ["--batch", "8", "0"], "argument --batch: must be >= 1, got 0"),
        ("generator_bench", ["--device", "tpu"], "unknown device 'tpu': use cpu, cuda or cuda:N"),
        ("train_overhead", ["--threads", "-2"], "argument --threads: must be >= 1, got -2"),
        ("train_overhead", ["--profile", "x"], "argument --profile: expected an integer, got 'x'"),
        ("train_overhead", ["--peak-tflops", "nan"], "argument --peak-tflops: must be a finite number, got 'nan'"),
        ("train_overhead", ["--peak-tflops", "inf"], "argument --peak-tflops: must be a finite number, got 'inf'"),
        ("train_overhead", ["--peak-tflops", "-5"], "argument --peak-tflops: must be >= 0, got -5"),
    ],
)
def test_bad_numbers_exit_2_with_one_line_before_measuring(module, args, message, monkeypatch, capsys):
    """A negative thread count reached torch.set_num_threads and ended in a traceback; 0 silently meant the default."""
    mod = __import__(f"bench.{module}", fromlist=["run"])
    monkeypatch.setattr(mod, "run", lambda *a, **k: pytest.fail("measured despite bad input"))
    assert mod.main(args) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"


def test_decoding_products_builds_its_models_with_the_generator_benchmarks_builder():
    """bench/decoding_products.py calls generator_bench.build_ours("ar"); a required device argument added to it
    broke that call, which only the slow quick run of bench/run.py exercised."""
    from bench import decoding_products

    models = decoding_products.models()
    assert set(models) == {"shipped", "bench model"} and models["bench model"].device.type == "cpu"


@pytest.mark.slow
def test_quick_run_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {"cpu", "cores", "torch", "gpu"} <= set(data["machine"])
    names = {r["bench"] for r in data["records"]}
    assert names == set(runner.BENCHES)
    for r in data["records"]:
        assert {"name", "ours", "peer", "ratio", "goal", "met"} <= set(r)


def test_a_failed_json_dump_keeps_the_earlier_file(tmp_path):
    """--json output was opened for writing first: a dump that failed left the file truncated."""
    from bench.table import write_json

    path = tmp_path / "bench.json"
    write_json(path, {"records": [{"name": "a", "ours": 1.0}]})
    loop: dict = {}
    loop["self"] = loop  # json.dumps refuses a circular structure
    with pytest.raises(ValueError, match="Circular"):
        write_json(path, {"records": loop})
    assert json.loads(path.read_text()) == {"records": [{"name": "a", "ours": 1.0}]}
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_a_json_path_that_cannot_be_written_is_refused_before_any_benchmark_runs(tmp_path, monkeypatch, capsys):
    """It was found only after every benchmark had run (tens of minutes), and the table was never printed."""
    ran = []
    monkeypatch.setattr(runner, "collect", lambda names, quick: ran.append(names) or [{"name": "x", "ours": 1.0}])
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path, tmp_path / "afile" / "out.json"):
        assert runner.main(["--only", "generator", "--json", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "is a folder or lies inside a file" in err and len(err.strip().splitlines()) == 1
    assert ran == []
    assert runner.main(["--only", "generator", "--json", str(tmp_path / "ok.json")]) == 0
    assert "x" in capsys.readouterr().out and json.loads((tmp_path / "ok.json").read_text())["records"]


def test_a_skipped_benchmark_prints_why_under_the_table(monkeypatch, capsys):
    """The reason ("bench venv missing: run bash bench/setup_env.sh first") was only in the JSON."""

    def fail(quick):
        raise RuntimeError("bench venv missing: run `bash bench/setup_env.sh` first")

    monkeypatch.setitem(runner.BENCHES, "generator", ("bench.generator_bench", False))
    real = runner.importlib.import_module  # the importlib module itself: patch only the benchmark's import (a
    # blanket fake also answered huggingface_hub's lazy imports, and run_cli failed once transformers was loaded)
    fake = type("M", (), {"run": staticmethod(fail)})
    monkeypatch.setattr(runner.importlib, "import_module", lambda name, *a: fake if name.startswith("bench.") else
                        real(name, *a))  # fmt: skip
    assert runner.main(["--only", "generator"]) == 0
    out = capsys.readouterr().out
    assert "generator: skipped: bench venv missing: run `bash bench/setup_env.sh` first" in out.splitlines()


def test_a_benchmark_child_killed_without_a_message_is_a_skipped_row_not_a_crash():
    """``stderr.splitlines()[-1]`` of a child killed by a signal (empty stderr) was an IndexError that ended the
    whole run and lost every earlier benchmark's records."""
    from bench.measure import failure_line

    killed = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                            check=False, capture_output=True, text=True)  # fmt: skip
    assert killed.stderr == "" and failure_line(killed) == f"exit {killed.returncode}"
    failed = subprocess.run([sys.executable, "-c", "raise SystemExit('error: bad')"], check=False, capture_output=True,
                            text=True)  # fmt: skip
    assert failure_line(failed) == "error: bad"


def test_a_measured_wall_time_ends_when_the_child_exits_not_at_the_next_sample(monkeypatch):
    """The sampler slept a whole interval before it looked again, so every wall time held up to 50 ms after the
    child's exit. It now waits on the child with the interval as a timeout, returning as the child exits; a sleep
    between samples fails here (no clock is compared)."""
    import bench.measure as measure

    real_sleep = measure.time.sleep

    def sleep(seconds):  # subprocess's own timed wait sleeps in steps of a few ms; the old loop slept the interval
        if seconds >= 0.5:
            pytest.fail(f"slept the whole {seconds} s interval between samples")
        real_sleep(seconds)

    monkeypatch.setattr(measure.time, "sleep", sleep)
    m = measure.run_measured([sys.executable, "-c", "import time; time.sleep(0.1)"], interval=0.5)
    assert m.proc.returncode == 0 and m.samples
    assert m.peak_rss_mib > 0  # MiB (2**20 bytes), which the records labelled MB


@pytest.mark.parametrize("module", ["bench.generate_cli", "bench.serve_latency", "bench.cache_throughput",
                                    "bench.tokenizer_throughput", "bench.decoding_products"])  # fmt: skip
def test_every_bench_script_checks_json_and_flags_before_it_measures(module, tmp_path, monkeypatch, capsys):
    """--json was written after the whole run (a folder was a traceback after minutes); --json MODEL/pipeline.yaml
    replaced the model's config with the results; a bad flag printed usage plus an error (two lines)."""
    import importlib

    bench = importlib.import_module(module)
    for name in ("run", "run_detailed"):
        if hasattr(bench, name):
            monkeypatch.setattr(bench, name, lambda *a, **k: pytest.fail("measured before checking its arguments"))
    (tmp_path / "folder.json").mkdir()
    cases = [(["--json", str(tmp_path / "folder.json")], "--json"), (["--bogus"], "unrecognized arguments")]
    if module in ("bench.generate_cli", "bench.serve_latency"):
        model = tmp_path / "model"
        model.mkdir()
        (model / "pipeline.yaml").write_text("mine\n")
        cases.append((["--model", str(model), "--json", str(model / "pipeline.yaml")], "lies in --model"))
    for argv, message in cases:
        capsys.readouterr()
        assert bench.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    if module in ("bench.generate_cli", "bench.serve_latency"):
        assert (tmp_path / "model" / "pipeline.yaml").read_text() == "mine\n"


def test_the_cache_benchmark_caches_on_the_cpu_as_its_encode_only_peer_does(monkeypatch, tmp_path):
    """Without --device, tools/cache_tokens.py took cuda:LOCAL_RANK on a GPU machine while encode_only ran on the
    CPU: the "caching vs encode-only" goal compared two devices."""
    from bench import cache_throughput

    seen = []

    def fake_run(cmd, env=None, cwd=None):
        seen.append(cmd)
        raise RuntimeError("stop")

    monkeypatch.setattr(cache_throughput, "run_measured", fake_run)
    with pytest.raises(RuntimeError, match="stop"):
        cache_throughput.cache_end_to_end("data", tmp_path / "tok", tmp_path / "out", 17, 64, 8, 1)
    cmd = seen[0]
    assert cmd[cmd.index("--device") + 1] == "cpu"


def test_the_training_overhead_benchmark_refuses_a_visible_gpu_before_building_anything(monkeypatch):
    """With CUDA visible the trainer went to nccl and cuda:0 while the plain loop stayed on the CPU."""
    from bench import train_overhead

    monkeypatch.setattr(train_overhead.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(train_overhead, "write_random_cache", lambda *a: pytest.fail("built despite a visible GPU"))
    with pytest.raises(RuntimeError, match="CUDA_VISIBLE_DEVICES"):
        train_overhead.run(quick=True)


def test_the_generate_benchmark_takes_a_relative_model_path_and_reports_a_bad_model_in_one_line(
    tmp_path, monkeypatch, capsys
):
    """generate.py ran in a temporary folder with the relative --model unchanged (so `--model models/shapes` from the
    repository root failed), and its exit 2 on a bad model came back as a RuntimeError traceback."""
    from bench import generate_cli

    model = tmp_path / "model"
    model.mkdir()
    (model / "pipeline.yaml").write_text("mine\n")
    monkeypatch.chdir(tmp_path)
    assert generate_cli.main(["--quick", "--model", "model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "must hold a mapping" in err[0], err
    assert str(model / "pipeline.yaml") in err[0]  # the child was given the absolute path


def test_the_training_overhead_refuses_to_compare_steps_whose_losses_part():
    """The README says the step-by-step loss agreement checks that the comparison is like for like, but the
    difference was only printed: a trainer doing other arithmetic still got an overhead ratio and "met"."""
    from bench.train_overhead import check_same_work

    same = {"ours": [{"loss": 8.0}, {"loss": 7.5}], "peer": [{"loss": 8.0000001}, {"loss": 7.5}]}
    check_same_work(same)
    other = {"ours": [{"loss": 8.0}, {"loss": 7.4}], "peer": [{"loss": 8.0}, {"loss": 7.5}]}
    with pytest.raises(RuntimeError, match=r"did different work: their losses part by 1.3e-02 \(relative\)"):
        check_same_work(other)
