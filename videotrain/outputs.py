"""What a training run writes besides checkpoints: metrics (JSONL, optional TensorBoard, a loss
curve PNG), sample videos with a contact sheet, and the exported safetensors directory."""

from __future__ import annotations

import json
import logging
import math
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch

from core.config import save_config
from core.files import atomic_path, atomic_write_json, hold_lock, overlapping, release_lock
from core.frames import tensor_to_frames
from core.video_write import write_contact_sheet, write_video
from core.weights import CONFIG_NAME, WEIGHTS_NAME, save_state
from generator.provenance import TrainedOn, write_trained_on
from videotrain.distributed import env_int

log = logging.getLogger(__name__)


def check_out_apart(out: Path, inputs: dict[str, Sequence[str | os.PathLike]]) -> None:
    """ValueError when the run folder is, holds or lies inside one of ``inputs`` (name -> paths; empty ones are
    skipped): ``--out`` equal to the data folder made the run's own previews training images on resume."""
    for name, paths in inputs.items():
        for path in paths:
            if path and overlapping(out, path):
                raise ValueError(f"--out {str(out)!r} overlaps {name} {str(path)!r}: give the run a folder of its own")


_HELD_HERE: set[str] = set()  # the run folders this process's trainers hold


class RunFolderLock:
    """This rank's hold on a run folder (``.train-rank-RRR.lock``, :func:`core.files.hold_lock`) while a trainer
    lives: the same command started twice used to take the first run, still training, for one killed before its
    first checkpoint, set its records aside and export over its weights, both exiting 0.

    Made with the folder if it is missing. Let go by :meth:`release` (``Trainer.fit`` does at its end), or when the
    trainer is garbage-collected or the process exits. A second trainer on the folder in the same process (a
    notebook cell run again) is told that it is its own process that holds it.
    """

    def __init__(self, out: Path) -> None:
        rank = env_int("RANK", 0)  # this rank's lock is held before init_distributed() checks the rest
        key = f"{os.path.realpath(out)}#{rank}"
        if key in _HELD_HERE:
            raise ValueError(f"a trainer in this process already holds --out {str(out)!r}: call its close() (fit() "
                             "does at its end) or drop it, or give a new --out")  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        name = f".train-rank-{rank:03d}.lock"
        busy = (f"another run is training in --out {str(out)!r} (it holds {name}): wait for it to end or stop it, "
                "or give a new --out")  # fmt: skip
        handle = hold_lock(out / name, busy)
        _HELD_HERE.add(key)
        self._release = weakref.finalize(self, _let_go, key, handle)

    def release(self) -> None:
        """Lets go (idempotent): the lock file is removed, then the lock."""
        self._release()


def _let_go(key: str, handle: IO[bytes]) -> None:
    _HELD_HERE.discard(key)
    release_lock(handle)


# What a finished run leaves in its folder besides checkpoints: a new run into such a folder, with no checkpoint to
# resume, would replace them (the exported weights of a run with run.checkpoint_every=0, its metrics).
EARLIER_RESULTS = ("export", "tokenizer", "metrics.jsonl")
# What a run killed before its first checkpoint (and before its export) leaves: rerunning the same command starts
# it over, after moving these into ``interrupted-<n>/`` (:func:`set_aside_interrupted_run`).
INTERRUPTED_RUN = ("metrics.jsonl", "train_config.yaml", "loss_curve.png", "tensorboard", "previews", "samples")


def killed_before_checkpoint(out: Path) -> bool:
    """For a run folder with no checkpoint to resume: whether it holds a run killed before its first checkpoint
    (its ``metrics.jsonl`` alone), which a new run sets aside and starts over. ValueError when it holds a finished
    run's results (:data:`EARLIER_RESULTS`), which the new run's export would overwrite."""
    earlier = [name for name in EARLIER_RESULTS if (out / name).exists()]
    if earlier not in ([], ["metrics.jsonl"]):
        raise ValueError(f"--out {str(out)!r} holds an earlier run's {', '.join(earlier)} and no checkpoint to "
                         "resume: give a new --out, or remove that folder")  # fmt: skip
    return earlier == ["metrics.jsonl"]


def set_aside_interrupted_run(out: Path) -> Path:
    """Moves the files of a run that was killed before it could checkpoint or export (SIGKILL, a lost node) into
    ``out/interrupted-<n>/``, the first free n, so that they are kept and not mixed with the new run's records.
    Returns that folder."""
    n = 1
    while (out / f"interrupted-{n}").exists():
        n += 1
    folder = out / f"interrupted-{n}"
    folder.mkdir()
    for name in INTERRUPTED_RUN:
        if (out / name).exists():
            os.replace(out / name, folder / name)
    log.warning("%s: an earlier run stopped before its first checkpoint; it starts over, its records moved to %s",
                out, folder)  # fmt: skip
    return folder


class MetricsLog:
    """Appends ``{"step": ..., **values}`` lines to ``metrics.jsonl``; draws ``loss_curve.png`` at close."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool = False, start_step: int = 0) -> None:
        """``start_step``: the step the run (re)starts from; records of later steps, logged by a run that stopped
        after its last checkpoint, are dropped, since the resumed run logs those steps again."""
        self.enabled, self.out = enabled, out
        if enabled:
            _drop_partial_last_line(out / "metrics.jsonl")
            _drop_records_after(out / "metrics.jsonl", start_step)
        self.file = (out / "metrics.jsonl").open("a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # tensorboard is optional
                raise ValueError(
                    "run.tensorboard=true needs the tensorboard package (pip install tensorboard)"
                ) from err
            self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        bad = [k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:  # a held-out loss that overflowed was written as NaN and left out of the curve without a word
            log.warning("step %d: %s not finite (written to metrics.jsonl as NaN or Infinity, left out of "
                        "loss_curve.png)", step, ", ".join(bad))  # fmt: skip
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        plot_loss_curve(self.out / "metrics.jsonl", self.out / "loss_curve.png")


def _drop_partial_last_line(path: Path) -> None:
    """A run killed while writing a record leaves a line without its newline; a resumed run would glue its first
    record onto it. Cuts the file back to its last complete line."""
    if not path.is_file():
        return
    with path.open("rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: dropped an unfinished last record (%d bytes)", path, len(data) - keep)
            f.truncate(keep)


def _drop_records_after(path: Path, step: int) -> None:
    """Rewrites ``path`` (atomically) without the records of steps after ``step``; lines that are not JSON stay."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            kept.append(line)
            continue
        if not (isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step):
            kept.append(line)
    if len(kept) != len(lines):
        dropped = len(lines) - len(kept)
        log.info("%s: dropped %d record(s) after step %d, which this run logs again", path, dropped, step)
        with atomic_path(path) as tmp:
            Path(tmp).write_text("".join(kept))


def plot_loss_curve(metrics: Path, png: Path) -> None:
    """Training (and eval) loss against step, from a metrics JSONL file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for line in metrics.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a damaged line must not stop the run's export; the plot skips it
            if line.strip():
                log.warning("%s: skipped a line that is not JSON", metrics)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r and math.isfinite(r["eval_loss"])]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*train), label="train")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def export_generator(state: dict[str, torch.Tensor], cfg: Any, directory: Path, trained_on: TrainedOn) -> None:
    """Writes ``model.safetensors`` + ``config.yaml`` (the GeneratorConfig) + ``train_config.yaml`` +
    ``trained_on.json`` (the fingerprints of its tokenizer and text encoder, checked when a pipeline is assembled)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_state(state, directory / WEIGHTS_NAME)
    save_config(cfg, directory / "train_config.yaml")
    write_trained_on(directory, trained_on)
    save_config(cfg.model, directory / CONFIG_NAME)


@torch.no_grad()
def write_generator_samples(
    model: Any,
    tokenizer: Any,
    cond: Any,
    grid: tuple[int, int, int],
    *,
    directory: Path,
    sample_steps: int,
    fps: float,
    order: str,
    captions: list[dict] | None = None,
) -> None:
    """Samples one video per condition row, decodes it, writes mp4s, a contact sheet and ``captions.json``.

    Args:
        model: the generator (put back in train mode afterwards).
        tokenizer: the frozen tokenizer that decodes its ids.
        cond: a :class:`~generator.Condition` of B rows.
        grid: the (t, h, w) token grid to sample.
        directory: where the files go.
        sample_steps: MaskGIT steps per unit.
        fps: frame rate of the written videos.
        order: the unit order to sample in (one the run trains).
        captions: what each row was conditioned on, saved beside the videos.
    """
    from generator.sampling import SamplingConfig, sample_ar, sample_maskgit

    model.eval()
    sampling = SamplingConfig(steps=sample_steps, cfg_scale=1.0)
    fn = sample_ar if model.config.style == "ar" else sample_maskgit
    device = next(model.parameters()).device
    ids = fn(
        model,
        cond,
        grid,
        order=order,
        sampling=sampling,
        generator=torch.Generator(device=device).manual_seed(0),
    )  # (B, t, h, w)
    model.train()
    frames = tensor_to_frames(tokenizer.decode(ids).clamp(-1, 1).float().cpu())  # (B, T, H, W, C)
    directory.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(frames):
        write_video(directory / f"sample_{i:02d}.mp4", clip, fps=fps)
    write_contact_sheet(directory / "contact_sheet.png", list(frames))
    atomic_write_json(directory / "captions.json", captions or [])
    log.info("wrote %d samples (%s order) to %s", len(frames), order, directory)
