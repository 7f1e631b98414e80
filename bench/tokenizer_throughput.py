"""Tokenizer throughput on CPU: tokvid's VideoTokenizer against magvit2-pytorch's.

Encodes and decodes one 17x128x128 clip at 4x8x8 compression (-> 5x16x16 tokens, LFQ with a
2**18 codebook on both sides) and reports frames/s, encoder+quantizer+decoder parameters and
peak RSS growth, with the ratio ours/peer. Goal: ours >= 1.0x the peer's frames/s.

All measurements run one after another in fresh subprocesses of this interpreter. Timing: one
process per phase holds both models and alternates their calls, so load from other work on a
shared machine falls on both sides alike. Peak RSS: one process per (side, phase), so the peak
belongs to that phase alone.

Runs in the bench venv (torch 2.14.1 + torchvision 0.29.1, which magvit2-pytorch needs):

    bash bench/setup_env.sh
    .bench-venv/bin/python bench/tokenizer_throughput.py [--quick] [--json PATH]

Over 400 lines because the peer's construction, the subprocess protocol and the memory and time
measurements must live in the one script that runs inside the bench venv.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from bench.table import check_json_target, format_table, record, write_json
from core.cli import CliParser, run_cli

if TYPE_CHECKING:
    from tokenizer import TokenizerConfig

NUM_FRAMES, SIZE = 17, 128
TEMPORAL_COMPRESSION, SPATIAL_COMPRESSION = 4, 8
CODEBOOK_BITS = 18  # 2**18 codes on both sides
SEED = 0
PARAM_TOLERANCE = 0.15  # the fps comparison is only meaningful with parameter counts this close
FPS_GOAL = 1.0  # ours / peer
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETUP_HINT = "run `bash bench/setup_env.sh`, then `.bench-venv/bin/python bench/tokenizer_throughput.py`"

# The peer's modules that are not encoder, quantizer or decoder: GAN discriminators and the
# VGG perceptual net (None with perceptual_loss_weight=0). Its own `parameters()` override
# returns exactly the rest; `peer_param_counts` checks that the two agree.
PEER_NON_AUTOENCODER = ("discr", "multiscale_discrs", "vgg")
PEER_PARTS = {
    "encoder": ("conv_in", "conv_in_first_frame", "encoder_layers", "encoder_cond_in"),
    "quantizer": ("quantizers",),
    "decoder": ("decoder_layers", "conv_out", "conv_out_first_frame", "decoder_cond_in"),
}


class PeerUnavailable(RuntimeError):
    """magvit2-pytorch cannot be imported in this interpreter."""


# --------------------------------------------------------------------------- the two models
# Our sides, both within 15% of the peer's parameter count. Stage widths at 17x128x128 in:
#   default:     64@128², 128@64², 128@32²x9, 256@16²x5   (TokenizerConfig's own defaults)
#   narrow-stem: 32@128², 128@64², 128@32²x9, 256@16²x5   (same deep stages, 1/4 the full-res convs)
OURS_PRESETS: dict[str, dict] = {
    "default": dict(base_channels=64, channel_mult=(1, 2, 2, 4), num_res_blocks=2),
    "narrow-stem": dict(base_channels=32, channel_mult=(1, 4, 4, 8), num_res_blocks=2),
}


def ours_config(preset: str = "default") -> TokenizerConfig:
    """tokvid's TokenizerConfig at 4x8x8 with LFQ-18 and no attention, widths from OURS_PRESETS."""
    from tokenizer import TokenizerConfig
    from tokenizer.quantizers import LFQConfig

    return TokenizerConfig(
        **OURS_PRESETS[preset],
        decoder_res_blocks=None,  # same as the encoder
        temporal_compression=TEMPORAL_COMPRESSION,
        spatial_compression=SPATIAL_COMPRESSION,
        attention=False,
        quantizer="lfq",
        lfq=LFQConfig(dim=CODEBOOK_BITS),
    )


def peer_kwargs() -> dict:
    """magvit2-pytorch VideoTokenizer at 4x8x8, modeled on its README example (init_dim 64, a
    'residual' stem, 'consecutive_residual' blocks): one compression per level (3x space, then
    2x time), conv-only like ours, max_dim=256 so the parameter count matches ours. Perceptual
    loss off (no VGG download) and GAN off."""
    r2 = ("consecutive_residual", 2)
    return dict(
        image_size=SIZE,
        init_dim=64,
        max_dim=256,  # 64@128², 128@64², 256@32², 256@16², then 256@16² at t=10 and t=5
        layers=(
            "residual",
            "compress_space",
            r2,
            "compress_space",
            r2,
            "compress_space",
            r2,
            "compress_time",
            r2,
            "compress_time",
            r2,
        ),
        codebook_size=2**CODEBOOK_BITS,
        num_codebooks=1,
        perceptual_loss_weight=0.0,
        use_gan=False,  # the discriminator is still built; it is deleted before measuring
        flash_attn=False,
    )


def ours_param_counts(model) -> dict[str, int]:
    """Encoder / quantizer / decoder parameters of tokvid's VideoTokenizer (which holds nothing else)."""
    counts = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("encoder", "quantizer", "decoder")
    }
    total = sum(p.numel() for p in model.parameters())
    if sum(counts.values()) != total:
        raise RuntimeError(f"tokvid parameters outside encoder/quantizer/decoder: {total} vs {counts}")
    return counts


def peer_param_counts(model) -> dict[str, int]:
    """Encoder / quantizer / decoder parameters of the peer, by walking its top-level modules."""
    owner = {child: part for part, children in PEER_PARTS.items() for child in children}
    counts = dict.fromkeys(PEER_PARTS, 0)
    for name, param in model.named_parameters():
        top = name.split(".")[0]
        if top in PEER_NON_AUTOENCODER:
            continue
        if top not in owner:
            raise RuntimeError(f"unclassified magvit2-pytorch parameter {name}; update PEER_PARTS")
        counts[owner[top]] += param.numel()
    # Cross-check with the peer's own `parameters()`, which lists the autoencoder only.
    own = sum(p.numel() for p in model.parameters())
    if own != sum(counts.values()):
        raise RuntimeError(f"magvit2-pytorch parameters() = {own} but the module walk counts {counts}")
    return counts


def build(side: str, preset: str = "default"):
    """Returns (model, encode_fn(video) -> ids, decode_fn(ids) -> video, param counts)."""
    import torch

    torch.manual_seed(SEED)
    if side == "ours":
        from tokenizer import VideoTokenizer

        model = VideoTokenizer(ours_config(preset)).eval()
        return model, model.encode, model.decode, ours_param_counts(model)
    try:
        from magvit2_pytorch import VideoTokenizer as PeerTokenizer
    except Exception as err:  # ImportError, or torchvision's operator errors on a CPU torch
        raise PeerUnavailable(f"{type(err).__name__}: {err}".splitlines()[0]) from err
    model = PeerTokenizer(**peer_kwargs()).eval()
    counts = peer_param_counts(model)
    # What the peer's own copy_for_eval() drops: training-only modules, ~tens of MB of weights.
    for name in PEER_NON_AUTOENCODER:
        if hasattr(model, name):
            delattr(model, name)
    return model, model.tokenize, model.decode_from_code_indices, counts


# --------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (Linux >= 4.0) so it covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kib() -> int:
    import resource

    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --------------------------------------------------------------------------- child processes
def _phase_call(phase: str, encode, decode):
    """Returns (fn, arg, expected output shape) for one phase on the fixed seeded inputs."""
    import torch

    g = torch.Generator().manual_seed(SEED)
    t, h, w = 1 + (NUM_FRAMES - 1) // TEMPORAL_COMPRESSION, SIZE // SPATIAL_COMPRESSION, SIZE // SPATIAL_COMPRESSION
    if phase == "encode":
        video = torch.rand(1, 3, NUM_FRAMES, SIZE, SIZE, generator=g) * 2 - 1  # (B, C, T, H, W)
        return encode, video, (1, t, h, w)
    ids = torch.randint(0, 2**CODEBOOK_BITS, (1, t, h, w), generator=g)  # (B, t, h, w)
    return decode, ids, (1, 3, NUM_FRAMES, SIZE, SIZE)


def _checked(fn, arg, shape: tuple[int, ...], what: str) -> None:
    out = fn(arg)
    if tuple(out.shape) != shape:
        raise RuntimeError(f"{what} gave shape {tuple(out.shape)}, expected {shape}")


def measure_memory(side: str, phase: str, calls: int, preset: str) -> dict:
    """One side, one phase, in this process: peak RSS over ``calls`` calls, minus RSS before."""
    import gc
    import resource

    import torch

    model, encode, decode, params = build(side, preset)
    fn, arg, shape = _phase_call(phase, encode, decode)
    with torch.inference_mode():
        gc.collect()
        rss_before = _status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ru_maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss cannot be reset: it already holds the build's peak (the peer's discriminator)
        # and can inherit the exec-ing parent's. Resetting VmHWM confines the peak to this phase.
        reset = _reset_peak_rss()
        for _ in range(calls):
            _checked(fn, arg, shape, f"{side} {phase}")
        ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = _peak_rss_kib() if reset else ru_maxrss
    return {
        "kind": "memory",
        "side": side,
        "phase": phase,
        "params": params,
        "rss_before_mib": rss_before / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_rss_growth_mib": (peak - rss_before) / 1024,
        "ru_maxrss_before_mib": ru_maxrss_before / 1024,
        "ru_maxrss_mib": ru_maxrss / 1024,
        "peak_method": "VmHWM after clear_refs" if reset else "ru_maxrss",
    }


def measure_time(phase: str, warmup: int, repeats: int, preset: str) -> dict:
    """Both sides, one phase, in this process; timed calls alternate ours/peer (ABBA order), so
    load from other work on a shared machine falls on both sides alike."""
    import torch

    load_before = os.getloadavg()[0]
    calls = {}
    for side in ("peer", "ours"):  # the peer first: fail fast if it does not import
        _, encode, decode, _ = build(side, preset)
        calls[side] = _phase_call(phase, encode, decode)
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    with torch.inference_mode():
        for side, (fn, arg, shape) in calls.items():
            _checked(fn, arg, shape, f"{side} {phase}")
            for _ in range(warmup - 1):
                fn(arg)
        for r in range(repeats):
            for side in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
                fn, arg, _ = calls[side]
                start = time.perf_counter()
                fn(arg)
                times[side].append(time.perf_counter() - start)
    return {
        "kind": "time",
        "phase": phase,
        "times_s": times,
        "median_s": {side: statistics.median(ts) for side, ts in times.items()},
        "load_avg_1min_before": load_before,
        "load_avg_1min_after": os.getloadavg()[0],
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
    }


def run_child(*args: str) -> dict:
    """Runs ``--child ARGS...`` of this file in a fresh process of this interpreter."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *args]
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"child {' '.join(args)} failed (rc={proc.returncode}):\n{tail}")
    result = json.loads(lines[-1])
    if "unavailable" in result:
        raise PeerUnavailable(result["unavailable"])
    return result


def child_main(args: list[str]) -> int:
    """``memory SIDE PHASE CALLS PRESET`` or ``time PHASE WARMUP REPEATS PRESET``; prints JSON."""
    try:
        if args[0] == "memory":
            side, phase, calls, preset = args[1:]
            result = measure_memory(side, phase, int(calls), preset)
        else:
            phase, warmup, repeats, preset = args[1:]
            result = measure_time(phase, int(warmup), int(repeats), preset)
    except PeerUnavailable as err:
        result = {"unavailable": str(err)}
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- the benchmark
def run(quick: bool = False, ours: str = "narrow-stem") -> list[dict]:
    """Runs the benchmark; one record per metric, ratio = ours / peer.

    Args:
        quick: 1 warm-up + 2 timed calls per side and phase (instead of 1 + 5), and one call
            instead of two for each peak-RSS measurement.
        ours: which of OURS_PRESETS to measure.

    Returns:
        Records ``{"name", "ours", "peer", "unit", "ratio", "goal", "met"}``: encode and decode
        frames/s (goal >= 1.0x), and informational (goal None) parameter and peak-RSS records.

    Raises:
        PeerUnavailable: magvit2-pytorch does not import in this interpreter.
    """
    return run_detailed(quick, ours)[0]


def run_detailed(quick: bool = False, ours: str = "default") -> tuple[list[dict], list[dict]]:
    """:func:`run`, plus the raw child measurements (call times, RSS before/after, load)."""
    warmup, repeats, mem_calls = (1, 2, 1) if quick else (1, 5, 2)
    mem: dict[tuple[str, str], dict] = {}
    # The peer first: if it cannot be imported, fail before spending minutes on our side.
    mem["peer", "encode"] = run_child("memory", "peer", "encode", str(mem_calls), ours)
    timing = {phase: run_child("time", phase, str(warmup), str(repeats), ours) for phase in ("encode", "decode")}
    for side, phase in (("ours", "encode"), ("peer", "decode"), ("ours", "decode")):
        mem[side, phase] = run_child("memory", side, phase, str(mem_calls), ours)
    fps = {(side, phase): NUM_FRAMES / timing[phase]["median_s"][side] for side in ("ours", "peer") for phase in timing}
    params = {side: mem[side, "encode"]["params"] for side in ("ours", "peer")}
    clip = f"{NUM_FRAMES}x{SIZE}x{SIZE}, B=1"
    records = [
        record(f"encode throughput ({clip})", fps["ours", "encode"], fps["peer", "encode"], "frames/s", FPS_GOAL),
        record(f"decode throughput ({clip})", fps["ours", "decode"], fps["peer", "decode"], "frames/s", FPS_GOAL),
        record(
            "params encoder+quantizer+decoder",
            sum(params["ours"].values()) / 1e6,
            sum(params["peer"].values()) / 1e6,
            "M",
            None,
        ),
    ]
    for part in ("encoder", "quantizer", "decoder"):
        records.append(record(f"params {part}", params["ours"][part] / 1e6, params["peer"][part] / 1e6, "M", None))
    for phase in ("encode", "decode"):
        ours_mib, peer_mib = (mem[side, phase]["peak_rss_growth_mib"] for side in ("ours", "peer"))
        records.append(record(f"peak RSS growth, {phase}", ours_mib, peer_mib, "MiB", None))
    return records, [*timing.values(), *mem.values()]


def main(argv: list[str] | None = None) -> int:
    """0, or 2 with one ``error:`` line on bad input or without the peer installed."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # internal: one measurement in a fresh process
        return child_main(argv[1:])
    return run_cli(_main, argv)


def _main(argv: list[str]) -> int:
    parser = CliParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 warm-up + 2 timed calls per side and phase (default 1 + 5)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the records, configs and raw measurements as JSON")
    parser.add_argument(
        "--ours", choices=sorted(OURS_PRESETS), default="narrow-stem", help="our config (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    check_json_target(args.json)
    try:
        records, details = run_detailed(quick=args.quick, ours=args.ours)
    except PeerUnavailable as err:
        raise ValueError(f"magvit2-pytorch does not import here ({err}); {SETUP_HINT}") from None
    timing = [d for d in details if d["kind"] == "time"]
    print(
        f"tokenizer throughput, ours={args.ours}, CPU fp32, torch {timing[0]['torch']}, "
        f"{timing[0]['num_threads']} threads, {'1 warm-up + 2' if args.quick else '1 warm-up + 5'} timed calls "
        "per side and phase, ours/peer alternating (median)"
    )
    print(format_table(records))
    for d in timing:  # robustness checks for a loaded machine: adjacent-call pairs, and best calls
        ts = d["times_s"]
        paired = statistics.median(p / o for o, p in zip(ts["ours"], ts["peer"]))
        spread = ", ".join(f"{side} {min(t):.2f}-{max(t):.2f} s" for side, t in ts.items())
        print(
            f"{d['phase']}: call times {spread}; ours/peer speed from adjacent pairs {paired:.3f}x, "
            f"from best calls {min(ts['peer']) / min(ts['ours']):.3f}x"
        )
    params = next(r for r in records if r["name"].startswith("params encoder+"))
    if abs(params["ratio"] - 1) > PARAM_TOLERANCE:
        print(
            f"warning: parameter counts differ by {abs(params['ratio'] - 1):.0%} (> {PARAM_TOLERANCE:.0%}); "
            "the fps ratio is not like for like"
        )
    load = max(max(d["load_avg_1min_before"], d["load_avg_1min_after"]) for d in timing)
    if load > 2.5:
        print(
            f"warning: 1-min load average reached {load:.1f} on {os.cpu_count()} CPUs (this run adds ~2); "
            "other work skews the fps"
        )
    if args.json:
        meta = {"ours": args.ours, "ours_config": asdict(ours_config(args.ours)), "peer_kwargs": peer_kwargs()}
        write_json(
            args.json,
            {"benchmark": "tokenizer_throughput", "quick": args.quick, **meta, "records": records, "details": details},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
