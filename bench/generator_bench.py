"""Generator sampling speed: tokvid's samplers against transformers' GPT-2 and each other, on the CPU by default
(``--device cuda`` runs both sides on a GPU).

One ~20M-parameter model (width 448, depth 8, 7 heads of 64, vocabulary 1000) generates a
5x16x16 token grid (1280 tokens) for a class label, at batch 1 and batch 8:

(a) GPT-style: ``sample_ar`` (order "token", static KV cache, cfg 1, temperature 1, top-k off)
    against ``GPT2LMHeadModel.generate`` (KV cache, sampling, 1280 new tokens after one prompt
    token) of the same width, depth, heads, vocabulary and length. Tokens/s; goal ours/peer >= 1.5.
(b) The KV cache against recomputing the whole context every step, both with ``sample_ar`` on
    a shorter grid (no-cache decoding is quadratic in length): the same tokens drawn, so the
    ratio of tokens/s is the cache's speed-up at equal work.
(c) Clip-wise MaskGIT (one unit, 12 steps) against GPT-style on the full grid: seconds per
    video (the GPT-style time is the one measured in (a)); ratio = MaskGIT / GPT-style.
(d) MaskGIT's time per step (a whole ``sample_maskgit`` call / 12) against one plain forward
    pass of the same model over the same 1280 tokens + prefix: the sampler's overhead, goal
    <= 1.10.
(e) Each side of (a) against the memory-bandwidth floor: the bytes one decoding step must read
    (every weight except the unused rows of embedding tables, plus the KV cache at the mean
    context length) divided by the read bandwidth measured here (``torch.sum`` over 512 MB),
    as tokens/s; ratio = the fraction of the floor's speed reached.

Our models are measured as ``Generator.from_pretrained`` returns them: eval mode, in the decoding layout
(``Generator.decoding_layout_``, see ``bench/decoding_products.py``; ``--no-decoding-layout`` skips it). Timed
calls run under ``torch.inference_mode()`` after a warm-up call on a 1x4x4 grid, alternate
the two sides every repeat (ABBA), and report the median. Everything runs in this process on
torch's default thread count unless ``--threads`` says otherwise; the 1-minute load average is
recorded because other work on a shared machine skews the numbers (with 2 threads on 2 busy
cores, far more than with 1).

    python bench/generator_bench.py [--quick] [--json PATH] [--batch 1 8] [--threads N] [--device cuda]
"""

from __future__ import annotations

import os
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch

from bench.table import check_json_target, format_table, record, write_json
from bench.timing import CPU, read_bandwidth_gbs, timed
from core.cli import CliParser, int_at_least, parse_device, run_cli
from generator import Condition, Generator, GeneratorConfig, make_layout
from generator.sampling import SamplingConfig, sample_ar, sample_maskgit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DIM, DEPTH, NUM_HEADS, VOCAB = 448, 8, 7, 1000  # ~20M parameters on both sides
GRID = (5, 16, 16)  # 1280 tokens: a 17x128x128 clip at 4x8x8
NOCACHE_GRID = (2, 8, 8)  # (b): 128 tokens; no-cache decoding of 1280 would take many minutes
QUICK_GRID, QUICK_NOCACHE_GRID = (2, 8, 8), (1, 4, 4)
WARMUP_GRID = (1, 4, 4)  # warm-up calls: same code paths, a fraction of the time
BATCHES = (1, 8)
MASKGIT_STEPS = 12
SEED = 0
AR_GOAL, OVERHEAD_GOAL = 1.5, 1.10
SAMPLING = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, cfg_scale=1.0)


# --------------------------------------------------------------------------- the models
def ours_config(style: str) -> GeneratorConfig:
    return GeneratorConfig(
        style=style,
        orders=("token",) if style == "ar" else ("clip",),
        vocab_size=VOCAB,
        max_grid=GRID,
        dim=DIM,
        depth=DEPTH,
        num_heads=NUM_HEADS,
        cond="class",
    )


def peer_kwargs() -> dict:
    """GPT-2 of our width/depth/heads/vocabulary with room for 1 prompt + 1280 new tokens. No
    EOS: the 1000 ids are all codes, so generation always runs the full length."""
    n = GRID[0] * GRID[1] * GRID[2]
    return dict(
        vocab_size=VOCAB,
        n_positions=n + 1,
        n_embd=DIM,
        n_layer=DEPTH,
        n_head=NUM_HEADS,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )


def build_ours(style: str, decoding_layout: bool = True, device: torch.device = CPU) -> Generator:
    """Our model as ``Generator.from_pretrained`` gives it: eval mode, in the decoding layout
    (``decoding_layout_``) unless ``decoding_layout`` is False, on ``device``."""
    torch.manual_seed(SEED)
    model = Generator(ours_config(style)).eval()
    return (model.decoding_layout_() if decoding_layout else model).to(device)


def build_peer(device: torch.device = CPU):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(SEED)
    return GPT2LMHeadModel(GPT2Config(**peer_kwargs(), attn_implementation="sdpa")).eval().to(device)


def param_counts(ours: Generator, peer) -> dict[str, dict[str, int]]:
    """Total and non-embedding counts. Ours: token table out of the latter (the head is untied);
    GPT-2: token and position tables out (its head is tied to the token table)."""
    peer_emb = peer.transformer.wte.weight.numel() + peer.transformer.wpe.weight.numel()
    return {
        "ours": {"total": ours.num_params(), "non_embedding": ours.num_params(exclude_embeddings=True)},
        "peer": {"total": peer.num_parameters(), "non_embedding": peer.num_parameters() - peer_emb},
    }


def step_bytes(weight_params: int, batch: int, context: float) -> float:
    """fp32 bytes one decoding step reads: the weights and the keys and values of ``context`` positions."""
    return 4 * (weight_params + 2 * DEPTH * batch * context * DIM)


def floor_tokens_per_s(weight_params: int, batch: int, context: float, bandwidth_gbs: float) -> float:
    return batch / (step_bytes(weight_params, batch, context) / (bandwidth_gbs * 1e9))


# --------------------------------------------------------------------------- timed calls
def cond_for(batch: int, device: torch.device) -> Condition:
    return Condition(labels=torch.arange(batch, device=device) % 72)


def ours_ar(
    model: Generator, batch: int, grid: tuple[int, int, int], use_cache: bool = True
) -> Callable[[], torch.Tensor]:
    cond = cond_for(batch, model.device)
    return lambda: sample_ar(
        model,
        cond,
        grid,
        order="token",
        sampling=SAMPLING,
        generator=torch.Generator(model.device).manual_seed(SEED),
        use_cache=use_cache,
    )


def peer_ar(peer, batch: int, num_tokens: int) -> Callable[[], torch.Tensor]:
    prompt = torch.zeros(batch, 1, dtype=torch.long, device=peer.device)  # one start token, like our prefix

    def call() -> torch.Tensor:
        torch.manual_seed(SEED)
        return peer.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            use_cache=True,
            max_new_tokens=num_tokens,
            min_new_tokens=num_tokens,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            pad_token_id=0,
        )

    return call


def ours_maskgit(model: Generator, batch: int, grid: tuple[int, int, int]) -> Callable[[], torch.Tensor]:
    cond = cond_for(batch, model.device)
    sampling = SamplingConfig(temperature=1.0, top_k=0, cfg_scale=1.0, steps=MASKGIT_STEPS)
    return lambda: sample_maskgit(
        model, cond, grid, order="clip", sampling=sampling, generator=torch.Generator(model.device).manual_seed(SEED)
    )


def plain_forward(model: Generator, batch: int, grid: tuple[int, int, int]) -> Callable[[], torch.Tensor]:
    """One forward pass as a MaskGIT step makes it: all tokens, bidirectional, no cache."""
    layout, device = make_layout(grid, "clip"), model.device
    L = layout.num_tokens
    ids = torch.randint(0, VOCAB + 1, (batch, L), generator=torch.Generator().manual_seed(SEED)).to(device)
    cond, mask = cond_for(batch, device), torch.ones(L, L, dtype=torch.bool, device=device)
    coords = layout.coords.to(device)  # once, not inside the timed call
    return lambda: model(ids, cond, coords=coords, mask=mask)


# --------------------------------------------------------------------------- the benchmark
def _fmt_grid(grid: tuple[int, int, int]) -> str:
    return "x".join(map(str, grid))


def run(
    quick: bool = False,
    batches: tuple[int, ...] = BATCHES,
    decoding_layout: bool = True,
    repeats: int | None = None,
    device: torch.device = CPU,
) -> list[dict]:
    """Runs (a)-(d) at every batch size; one record per metric, ratio = ours / peer.

    Args:
        quick: the 2x8x8 grid (128 tokens) for (a), (c), (d) and 1x4x4 for (b), one timed call
            each (instead of 5x16x16 and 2x8x8, two timed calls: the pair ABBA-alternates, and
            a third would push bench/run.py's full run past its 20-minute budget).
        batches: batch sizes to run.
        decoding_layout: our models with ``Generator.decoding_layout_`` (as loaded for inference).
        repeats: timed calls per measurement (default 1 with ``quick``, else 2).
        device: where both sides run (fp32 on either); on CUDA every timed call ends with a synchronize, and
            (e) uses that device's read bandwidth.

    Returns:
        Records ``{"name", "ours", "peer", "unit", "ratio", "goal", "met", "goal_op"}``.
        (a) tokens/s, goal >= 1.5; (b) tokens/s cached vs recomputed; (c) s/video MaskGIT vs
        GPT-style; (d) ms per MaskGIT step vs per plain forward, goal <= 1.10; (e) tokens/s vs the
        memory-bandwidth floor; parameter counts.
    """
    grid, nc_grid = (QUICK_GRID, QUICK_NOCACHE_GRID) if quick else (GRID, NOCACHE_GRID)
    repeats = repeats or (1 if quick else 2)
    L, L_nc = grid[0] * grid[1] * grid[2], nc_grid[0] * nc_grid[1] * nc_grid[2]
    tag = f"{'quick ' if quick else ''}{_fmt_grid(grid)}"
    ar, mg = build_ours("ar", decoding_layout, device), build_ours("maskgit", decoding_layout, device)
    peer = build_peer(device)
    params = param_counts(ar, peer)
    # Weights a decoding step reads: all but the embedding rows it does not look up. Our token table
    # is only indexed (the head is separate); GPT-2's is also its head, so only its position table is out.
    read_params = {
        "ours": params["ours"]["total"] - ar.tok_emb.weight.numel(),
        "peer": params["peer"]["total"] - peer.transformer.wpe.weight.numel(),
    }
    bandwidth = read_bandwidth_gbs(device)
    details: dict = {
        "params": params, "times_s": {}, "cpu_s": {}, "load_avg_1min": [os.getloadavg()[0]],
        "read_bandwidth_gbs": bandwidth, "read_params": read_params,
    }  # fmt: skip
    records = []
    for B in batches:
        with torch.inference_mode():
            # (a) GPT-style: ours vs GPT-2, same length
            ours_ar(ar, B, WARMUP_GRID)(), peer_ar(peer, B, 16)()
            cpu: dict[str, dict[str, list[float]]] = {"ar": {}, "cache": {}, "maskgit": {}}
            t_a = timed(
                {"ours": ours_ar(ar, B, grid), "peer": peer_ar(peer, B, L)},
                {"ours": (B, *grid), "peer": (B, L + 1)},
                repeats,
                cpu["ar"],
                device,
            )
            # (b) cache vs recomputation, equal work on the shorter grid
            ours_ar(ar, B, WARMUP_GRID, use_cache=False)()
            t_b = timed(
                {"cache": ours_ar(ar, B, nc_grid), "no_cache": ours_ar(ar, B, nc_grid, use_cache=False)},
                {"cache": (B, *nc_grid), "no_cache": (B, *nc_grid)},
                repeats,
                cpu["cache"],
                device,
            )
            # (c), (d) MaskGIT clip-wise vs GPT-style and vs one plain forward pass
            ours_maskgit(mg, B, WARMUP_GRID)(), plain_forward(mg, B, WARMUP_GRID)()
            t_cd = timed(
                {"maskgit": ours_maskgit(mg, B, grid), "forward": plain_forward(mg, B, grid)},
                {"maskgit": (B, *grid), "forward": (B, L, VOCAB)},
                repeats,
                cpu["maskgit"],
                device,
            )
        details["times_s"][f"B={B}"] = {"ar": t_a, "cache": t_b, "maskgit": t_cd}
        details["cpu_s"][f"B={B}"] = cpu
        details["load_avg_1min"].append(os.getloadavg()[0])
        med = lambda ts: statistics.median(ts)  # noqa: E731
        ar_s, peer_s = med(t_a["ours"]), med(t_a["peer"])
        mg_s, fwd_s = med(t_cd["maskgit"]), med(t_cd["forward"])
        mean_context = {"ours": ar.prefix_len + 1 + (L - 1) / 2, "peer": 1 + (L - 1) / 2}
        floor = {k: floor_tokens_per_s(read_params[k], B, mean_context[k], bandwidth) for k in read_params}
        records += [
            record(
                f"(a) GPT-style sampling {tag}, B={B}: tokvid vs GPT2.generate",
                B * L / ar_s,
                B * L / peer_s,
                "tok/s",
                AR_GOAL,
            ),
            record(f"(e) tokvid GPT-style vs bandwidth floor {tag}, B={B}", B * L / ar_s, floor["ours"], "tok/s", None),
            record(f"(e) GPT2.generate vs bandwidth floor {tag}, B={B}", B * L / peer_s, floor["peer"], "tok/s", None),
            record(
                f"(b) KV cache vs recompute, GPT-style {'quick ' if quick else ''}{_fmt_grid(nc_grid)}, B={B}",
                B * L_nc / med(t_b["cache"]),
                B * L_nc / med(t_b["no_cache"]),
                "tok/s",
                None,
            ),
            record(
                f"(c) MaskGIT clip {MASKGIT_STEPS} steps vs GPT-style {tag}, B={B}",
                mg_s / B,  # one call makes B videos
                ar_s / B,
                "s/video",
                None,
                "<=",
            ),
            record(
                f"(d) MaskGIT step vs plain forward, {L}+1 tokens, B={B}",
                1e3 * mg_s / MASKGIT_STEPS,
                1e3 * fwd_s,
                "ms",
                OVERHEAD_GOAL,
                "<=",
            ),
        ]
    for kind in ("total", "non_embedding"):
        records.append(
            record(
                f"params {kind.replace('_', '-')} (tokvid vs GPT2)",
                params["ours"][kind] / 1e6,
                params["peer"][kind] / 1e6,
                "M",
                None,
            )
        )
    details["torch"], details["num_threads"], details["repeats"] = torch.__version__, torch.get_num_threads(), repeats
    details["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    run.last_details = details  # type: ignore[attr-defined]  # raw timings for --json
    return records


def _main(argv: Sequence[str] | None) -> int:
    parser = CliParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2x8x8 grid (1x4x4 for the cache comparison), one timed call each"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the records, configs and raw timings as JSON")
    parser.add_argument(
        "--batch", type=int_at_least(1), nargs="+", default=list(BATCHES), help="batch sizes (default: %(default)s)"
    )
    parser.add_argument("--threads", type=int_at_least(1), default=None, help="torch threads (default: torch's own)")
    parser.add_argument(
        "--repeats", type=int_at_least(1), default=None, help="timed calls per measurement (default: 1 quick, 2 full)"
    )
    parser.add_argument(
        "--no-decoding-layout", action="store_true", help="skip Generator.decoding_layout_ (to measure what it buys)"
    )
    parser.add_argument("--device", default="cpu", help="where both sides run: cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    check_json_target(args.json)  # before the benchmark, not after it
    device = parse_device(args.device)
    warnings.filterwarnings("ignore")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    records = run(
        quick=args.quick,
        batches=tuple(args.batch),
        decoding_layout=not args.no_decoding_layout,
        repeats=args.repeats,
        device=device,
    )
    details = run.last_details  # type: ignore[attr-defined]
    p = details["params"]
    print(
        f"generator sampling, {details['device']} fp32, torch {details['torch']}, {details['num_threads']} threads, "
        f"dim {DIM} depth {DEPTH} heads {NUM_HEADS} vocab {VOCAB}: tokvid {p['ours']['total'] / 1e6:.2f}M params, "
        f"GPT2 {p['peer']['total'] / 1e6:.2f}M; {details['repeats']} timed call(s) after a warm-up, median; "
        f"read bandwidth {details['read_bandwidth_gbs']:.1f} GB/s"
        + ("; ours without the decoding layout" if args.no_decoding_layout else "")
    )
    print(format_table(records))
    for b, t in details["times_s"].items():
        cpu = details["cpu_s"][b]
        spread = "; ".join(
            f"{what} {name} {min(ts):.2f}-{max(ts):.2f} s (cpu {statistics.median(cpu[what][name]):.2f})"
            for what, d in t.items()
            for name, ts in d.items()
        )
        print(f"{b} wall time per call: {spread}")
    load = max(details["load_avg_1min"])
    if load > 2.5:
        print(f"warning: 1-min load average reached {load:.1f} on {os.cpu_count()} CPUs; other work skews the timings")
    if args.json:
        payload = {
            "benchmark": "generator_bench",
            "quick": args.quick,
            "decoding_layout": not args.no_decoding_layout,
            "ours_config": {style: asdict(ours_config(style)) for style in ("ar", "maskgit")},
            "peer_kwargs": peer_kwargs(),
            "sampling": asdict(SAMPLING),
            "maskgit_steps": MASKGIT_STEPS,
            "records": records,
            "details": details,
        }
        write_json(args.json, payload)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0, or 2 with one ``error:`` line on bad input."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
