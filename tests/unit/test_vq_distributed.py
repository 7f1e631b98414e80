"""VQ codebook state under data parallelism: two gloo processes, each with its own batches."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.collectives import world_size
from tokenizer.quantizers import VQ, VQConfig

STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, use_ema: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same initial codebook on both ranks, as the trainers seed it
        q = VQ(VQConfig(codebook_size=32, dim=4, use_ema=use_ema, ema_decay=0.5, dead_code_threshold=0.3)).train()
        g = torch.Generator().manual_seed(100 + rank)  # each rank sees other data
        restarted = 0.0
        for step in range(STEPS):
            n = 0 if (rank == 1 and step == 2) else 2  # one empty batch on rank 1 (the tail of a split)
            z = torch.randn(n, 4, 2, 3, 3, generator=g) + 3.0 * rank  # (B, D, t, h, w): the ranks' latents differ
            if rank == 1 and step == 4:
                z[0, :, 0, 0, 0] = float("nan")  # one bad row on one rank
            restarted += float(q(z).stats["restarted"])
        state = {k: v.detach().clone() for k, v in q.state_dict().items()}
        torch.save({"state": state, "restarted": restarted}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("use_ema", [True, False])
def test_two_ranks_keep_one_codebook_through_ema_updates_restarts_an_empty_batch_and_a_nan(tmp_path, use_ema):
    """Without averaging the EMA statistics and broadcasting restarts, each rank trained its own codebook
    and the checkpoint silently kept rank 0's."""
    mp.spawn(_worker, args=(_free_port(), use_ema, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["restarted"] > 0 and ranks[0]["restarted"] == ranks[1]["restarted"]  # restarts happened, alike
    for key, value in ranks[0]["state"].items():
        assert torch.isfinite(value).all(), key
        torch.testing.assert_close(value, ranks[1]["state"][key], rtol=1e-6, atol=1e-6, msg=key)


def test_a_single_process_needs_no_process_group():
    assert world_size() == 1
    q = VQ(VQConfig(codebook_size=8, dim=3)).train()
    z = torch.randn(2, 3, 1, 2, 2)
    z[0, :, 0, 0, 0] = float("nan")  # a non-finite row leaves the EMA state finite
    q(z)
    assert all(torch.isfinite(v).all() for v in q.state_dict().values())
