"""Planted bugs: real mistakes written into a copy of the code, each of which the unit tests must catch.

The first five are the bugs named in issue #16 (all 67 generator tests passed with every one of them); the rest
are the same kind of silent semantic error in the other areas the issue lists. Each bug is an exact text
replacement in one file; the harness copies the tracked files to a temporary folder, plants one bug at a time and
runs the unit tests that guard that area. A bug that no test catches is reported as MISSED and the exit code is 1.
Mutation testing (``mutmut run``, configured in pyproject.toml) is the broad measure; this list is the
named regression set.

    python tests/helpers/planted_bugs.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINING_TESTS = (
    "tests/unit/test_training_semantics.py",
    "tests/unit/test_training_semantics_ema.py",
    "tests/unit/test_training_semantics_guards.py",
    "tests/unit/test_training_semantics_run.py",
)
GENERATOR_TESTS = (
    "tests/unit/test_generator.py",
    "tests/unit/test_generator_layouts.py",
    "tests/unit/test_generator_schedules.py",
    "tests/unit/test_generator_sampling.py",
    "tests/unit/test_generator_kv_cache.py",
    "tests/unit/test_generator_layers.py",
    "tests/unit/test_generator_text.py",
    "tests/unit/test_sampling_semantics.py",
    "tests/unit/test_sampling_context.py",
    "tests/unit/test_masks_leak_nothing.py",
    *TRAINING_TESTS,
)
QUANTIZER_TESTS = (
    "tests/unit/test_quantizers.py",
    "tests/unit/test_quantizers_vq.py",
    "tests/unit/test_quantizers_fsq.py",
    "tests/unit/test_quantizers_sign.py",
    "tests/unit/test_quantizers_config.py",
)


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...] = GENERATOR_TESTS


BUGS = (
    Bug("filter_logits returns its input (top-k and top-p off)", "generator/sampling/filtering.py",
        '        raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got {top_k} and {top_p}")\n',
        '        raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got {top_k} and {top_p}")\n'
        '    return logits\n'),
    Bug("MaskGIT re-masks its most confident tokens", "generator/sampling/maskgit.py",
        "torch.topk(conf, keep_masked, dim=-1, largest=False)",
        "torch.topk(conf.masked_fill(~masked, float('-inf')), keep_masked, dim=-1, largest=True)"),
    Bug("MaskGIT choice without Gumbel noise", "generator/sampling/maskgit.py",
        "        if anneal > 0:\n", "        if anneal > 0 and False:\n"),
    Bug("MaskGIT Gumbel noise never annealed", "generator/sampling/maskgit.py",
        "sampling.choice_temperature * (1.0 - (s + 1) / steps)", "sampling.choice_temperature"),
    Bug("two-stream mask: masked tokens see the clean copy of their own unit", "generator/units.py",
        "    bottom = torch.cat([before, same], dim=1)", "    bottom = torch.cat([before | same, same], dim=1)"),
    Bug("classifier-free guidance with the wrong sign", "generator/sampling/context.py",
        "return null_logits + g * (cond_logits - null_logits)", "return null_logits - g * (cond_logits - null_logits)"),
    Bug("guidance scale 1 still mixes in the null condition", "generator/sampling/context.py",
        "self.guided = sampling.cfg_scale != 1.0", "self.guided = True"),
    Bug("temperature multiplies the logits", "generator/sampling/filtering.py",
        "logits.float() / cfg.temperature", "logits.float() * cfg.temperature"),
    Bug("schedule keeps one token too many masked per step", "generator/schedules.py",
        "math.floor(gamma(r, schedule) * num_tokens)", "math.ceil(gamma(r, schedule) * num_tokens)"),
    Bug("training masks at least two tokens per unit", "generator/schedules.py",
        ".clamp_min(1)  # (B, U)", ".clamp_min(2)  # (B, U)"),
    Bug("KV cache keys written one position late", "generator/layers.py",
        "cache.k[layer, :, :, start:stop] = k", "cache.k[layer, :, :, start + 1 : stop + 1] = k"),
    Bug("block-causal mask lets a unit see the next one", "generator/units.py",
        "return unit_of[None, :] <= unit_of[:, None]", "return unit_of[None, :] // 2 <= unit_of[:, None] // 2"),
    Bug("RoPE rotates the time axis by absolute position only", "generator/layers.py",
        "pos = coords[:, i].float().clamp_min(0)",
        "pos = coords[:, i].float().clamp_min(0) ** (1.5 if i == 0 else 1.0)"),
    Bug("AR training ignores the model's cube size", "generator/objectives.py",
        "layout = make_layout(tuple(ids.shape[1:]), order, model.config.cube_size)\n    seq = layout.to_sequence(ids)"
        "  # (B, L)",
        "layout = make_layout(tuple(ids.shape[1:]), order)\n    seq = layout.to_sequence(ids)  # (B, L)"),
    Bug("MaskGIT loss ignores label smoothing", "generator/objectives.py",
        "loss = F.cross_entropy(picked, target, label_smoothing=cfg.label_smoothing)",
        "loss = F.cross_entropy(picked, target)"),
    Bug("context_mask_ratio masks the same positions in every row", "generator/objectives.py",
        "torch.rand(B, L, generator=generator)", "torch.rand(L, generator=generator).expand(B, L)"),
    Bug("EMA swaps decay and 1 - decay", "videotrain/ema.py",
        "lerp_(p.detach().float(), 1.0 - self.decay)", "lerp_(p.detach().float(), self.decay)", TRAINING_TESTS),
    Bug("a non-finite gradient does not skip the step", "videotrain/guards.py",
        "        return norm, bad\n\n    def clear", "        return norm, False\n\n    def clear", TRAINING_TESTS),
    Bug("FSQ digits in the wrong radix order", "tokenizer/quantizers/fsq.py",
        "torch.ones(1, dtype=torch.long), levels[:-1]]", "torch.ones(1, dtype=torch.long), levels[1:]]",
        QUANTIZER_TESTS),
    Bug("LFQ entropy without the codebook term", "tokenizer/quantizers/sign.py",
        "entropy = per_sample - cfg.codebook_entropy_weight * codebook", "entropy = per_sample", QUANTIZER_TESTS),
    # Found by the 2026-12-02 mutation run: each passed every test written before it.
    Bug("MaskGIT never commits a finished unit (later units do not see it)", "generator/sampling/maskgit.py",
        "ctx.logits(cur, coords, keep=True, progress=done)", "ctx.logits(cur, coords, keep=False, progress=done)"),
    Bug("sampling ignores the model's cube size", "generator/sampling/context.py",
        "make_layout(grid, order, model.config.cube_size)", "make_layout(grid, order)"),
    Bug("a linear CFG schedule sees no progress in GPT-style sampling", "generator/sampling/ar.py",
        "ctx.step_logits(prev, tables, i - 1, progress=i / L)", "ctx.step_logits(prev, tables, i - 1, progress=0.0)"),
    Bug("a later finite gradient clears a hook's non-finite flag", "videotrain/guards.py",
        "self.bad |= ~torch.isfinite(grad).all()", "self.bad = ~torch.isfinite(grad).all()", TRAINING_TESTS),
    Bug("quantizer codes come back in fp32 from a bf16 latent", "tokenizer/quantizers/vq.py",
        "codes=codes.to(z.dtype)", "codes=codes", QUANTIZER_TESTS),
)  # fmt: skip


def copy_tree(dest: Path) -> None:
    """Copies the tracked and untracked-but-not-ignored files (what a fresh clone plus new work holds)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def stale(tree: Path, bug: Bug) -> str | None:
    """Why ``bug`` cannot be planted in ``tree`` (its text does not occur exactly once there, e.g. after a
    refactor), else None."""
    count = (tree / bug.path).read_text().count(bug.old)
    return None if count == 1 else f"{bug.name}: the text to replace occurs {count} times in {bug.path}"


def plant(tree: Path, bug: Bug) -> None:
    if why := stale(tree, bug):
        raise RuntimeError(why)
    path = tree / bug.path
    path.write_text(path.read_text().replace(bug.old, bug.new))


def caught(tree: Path, bug: Bug) -> bool:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *bug.tests]
    result = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"{bug.name}: pytest exited {result.returncode}\n{result.stdout[-2000:]}")
    return result.returncode == 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=None, help="substrings of bug names to run")
    args = parser.parse_args(argv)
    bugs = [b for b in BUGS if args.only is None or any(s in b.name for s in args.only)]
    problems = [why for bug in bugs if (why := stale(ROOT, bug))]
    if problems:  # before minutes of tests, not at the first stale bug after them
        print("cannot plant:", *problems, sep="\n  ")
        return 1
    missed = 0
    with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
        clean = Path(tmp) / "clean"
        copy_tree(clean)
        if caught(clean, Bug("none", "", "", "", GENERATOR_TESTS + QUANTIZER_TESTS)):
            print("the unplanted copy fails its tests: fix that first")
            return 1
        for bug in bugs:
            tree = Path(tmp) / "tree"
            shutil.copytree(clean, tree)
            plant(tree, bug)
            ok = caught(tree, bug)
            missed += not ok
            print(f"{'caught' if ok else 'MISSED'}  {bug.name}", flush=True)
            shutil.rmtree(tree)
    print(f"{len(bugs) - missed}/{len(bugs)} planted bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
