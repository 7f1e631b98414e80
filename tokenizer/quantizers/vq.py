"""Vector quantization (VQ-VAE) with an EMA or learned codebook and dead-code restarts.

Each latent vector is replaced by its nearest codebook entry: by cosine similarity with
``l2_normalize`` (latents and codes are unit vectors, as in ViT-VQGAN), else by Euclidean
distance. The output carries a straight-through gradient to the (normalized) latent.

Codebook training, in training mode only:

- ``use_ema``: the codebook is a buffer, the ratio of EMAs of per-code latent sums and
  per-code counts, the counts Laplace-smoothed so no code divides by zero. Only ``commit``
  is returned as a loss.
- otherwise the codebook is a parameter trained by the ``codebook`` loss, and an EMA of
  per-code counts is kept for dead-code detection only.

Dead codes: at the start of each training forward, codes whose EMA count (expected
assignments per batch, starting at 1, and at ``max(1, 2 * threshold)`` after a restart) is below
``dead_code_threshold`` are replaced by
latents of the current batch, before lookup, so that no autograd graph holds the old
values. The j-th dead code (in code order) takes row ``(j * 2654435761) mod N`` of the batch's N
latents (Knuth's multiplicative hash: dead codes land on distinct rows spread over the batch, up to N
of them; hashing the code index instead put codes k and k + N on one row, where only one of the two
could win), so restarts draw no random numbers and a resumed run restarts exactly as the
original; the batch itself is what varies. With the defaults a code unused for about
700 steps is restarted.

Data parallelism: the per-step counts and sums are averaged over all ranks before they enter the
EMAs, and restarts take rank 0's rows (:mod:`core.collectives`), so every rank keeps the same codebook
(the training engine averages only gradients). Rows with a non-finite value are left out of both, so
one bad batch cannot poison the codebook of every rank. A learned codebook (``use_ema=False``) is a
parameter: restarts write into it in place, which an optimizer that keeps separate master weights
overwrites at its next step (DeepSpeed with ZeRO stage 1-3, or fp16; measured on CPU: fp32 and bf16 at
ZeRO-0 keep the restarts). The tokenizer trainer refuses that combination; use the EMA codebook there.

All state (codebook, EMA counts and sums) is in persistent tensors, so it round-trips through
safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from core.collectives import broadcast_from_first_, mean_across_ranks_
from tokenizer.quantizers.base import Quantizer, QuantizerOutput, check_ids, check_latent, usage_stats

_RESTART_HASH = 2654435761  # a prime near 2**32 / golden ratio: dead code j restarts at row (j * it) mod N


@dataclass(frozen=True, kw_only=True)
class VQConfig:
    """Vector quantizer settings.

    Attributes:
        codebook_size: number of codes K.
        dim: latent channels D.
        l2_normalize: cosine-similarity lookup with unit-norm latents and codes.
        use_ema: EMA codebook updates instead of a learned codebook with ``codebook`` loss.
        ema_decay: decay of the EMA counts (both modes) and sums (EMA mode).
        ema_epsilon: Laplace smoothing of the EMA counts.
        commitment_weight: weight of ``mean((z - sg(codes))^2)``.
        codebook_weight: weight of ``mean((sg(z) - codes)^2)`` (learned codebook only).
        dead_code_threshold: codes with an EMA count below it are restarted; 0 disables.
    """

    codebook_size: int = 1024
    dim: int = 8
    l2_normalize: bool = True
    use_ema: bool = True
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    dead_code_threshold: float = 1e-3

    def __post_init__(self) -> None:
        if self.codebook_size < 1 or self.dim < 1:
            raise ValueError(f"VQConfig: codebook_size and dim must be >= 1, got {self.codebook_size}, {self.dim}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"VQConfig.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not self.ema_epsilon > 0:  # NaN fails too
            raise ValueError(f"VQConfig.ema_epsilon must be > 0, got {self.ema_epsilon}")
        for field in ("commitment_weight", "codebook_weight", "dead_code_threshold"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"VQConfig.{field} must be >= 0, got {getattr(self, field)}")


class VQ(Quantizer):
    """Nearest-neighbour vector quantizer with an explicit (K, D) codebook."""

    codebook: torch.Tensor
    ema_cluster_size: torch.Tensor

    def __init__(self, config: VQConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VQConfig()
        self.dim = config.dim
        self.codebook_size = config.codebook_size
        init = torch.randn(config.codebook_size, config.dim)  # (K, D)
        if config.l2_normalize:
            init = F.normalize(init, dim=-1)
        if config.use_ema:
            self.register_buffer("codebook", init)
            # codebook == ema_embed_sum / ema_cluster_size holds from the start.
            self.register_buffer("ema_embed_sum", init.clone())  # (K, D)
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("ema_cluster_size", torch.ones(config.codebook_size))  # (K,)

    _FP32_STATE = ("ema_cluster_size", "ema_embed_sum")

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - torch's own signature
        """Moves the EMA state with the module but never casts it: in bf16 a 1% step smaller than half a rounding step
        was lost (the averages stalled short of the data), and in fp16 the summed counts passed 65,504 and turned
        every code to NaN. The codebook follows the module's dtype; the EMA update computes it in fp32."""
        kept = {name: getattr(self, name) for name in self._FP32_STATE if hasattr(self, name)}
        super()._apply(fn, recurse)
        for name, old in kept.items():
            new = getattr(self, name)
            if new.dtype != old.dtype:
                setattr(self, name, old.to(device=new.device))
        return self

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantizes a latent; in training mode also updates the codebook state.

        Args:
            z: (B, D, t, h, w) float latent.

        Returns:
            QuantizerOutput with codes (B, D, t, h, w) (straight-through to the latent,
            normalized when ``l2_normalize``), ids (B, t, h, w), losses ``commit`` (and
            ``codebook`` for a learned codebook), stats ``usage``, ``perplexity``, ``restarted``.
            In training mode the codes are those before this step's EMA update, so
            ``ids_to_codes(ids)`` reproduces them exactly only in eval mode.
        """
        check_latent(z, self.dim, "VQ")
        cfg = self.config
        b, _, t, h, w = z.shape
        flat = rearrange(z.float(), "b d t h w -> (b t h w) d")
        if cfg.l2_normalize:
            flat = F.normalize(flat, dim=-1)
        restarted = flat.new_zeros(())
        if self.training and cfg.dead_code_threshold > 0:  # an empty batch too: its rank joins the broadcast
            restarted = self._restart_dead_codes(flat.detach())
        codebook = self._codebook()  # (K, D)
        ids = self._nearest(flat, codebook)  # (N,)
        q = codebook[ids]  # (N, D)
        losses = {"commit": cfg.commitment_weight * F.mse_loss(flat, q.detach())}
        if not cfg.use_ema:
            losses["codebook"] = cfg.codebook_weight * F.mse_loss(q, flat.detach())
        if self.training:
            self._update_ema(flat.detach(), ids)
        codes = flat + (q - flat).detach()
        codes = rearrange(codes, "(b t h w) d -> b d t h w", b=b, t=t, h=h, w=w)
        ids = rearrange(ids, "(b t h w) -> b t h w", b=b, t=t, h=h, w=w)
        stats = {**usage_stats(ids, self.codebook_size), "restarted": restarted}
        return QuantizerOutput(codes=codes.to(z.dtype), ids=ids, losses=losses, stats=stats)

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Nearest-code ids of a latent, without touching any state.

        Args:
            codes: (B, D, t, h, w) float.

        Returns:
            (B, t, h, w) long ids.
        """
        check_latent(codes, self.dim, "VQ")
        b, _, t, h, w = codes.shape
        flat = rearrange(codes.float(), "b d t h w -> (b t h w) d")
        if self.config.l2_normalize:
            flat = F.normalize(flat, dim=-1)
        with torch.autocast(device_type=flat.device.type, enabled=False):  # a bf16 distance picked another code
            ids = self._nearest(flat, self._codebook().detach().float())
        return rearrange(ids, "(b t h w) -> b t h w", b=b, t=t, h=h, w=w)

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Maps ids to codebook entries.

        Args:
            ids: (B, t, h, w) integer ids in [0, K).

        Returns:
            (B, D, t, h, w) float32 codes, unit-norm when ``l2_normalize``.
        """
        check_ids(ids, self.codebook_size, "VQ")
        codes = self._codebook()[ids.long()]  # (B, t, h, w, D)
        return rearrange(codes, "b t h w d -> b d t h w")

    def _codebook(self) -> torch.Tensor:
        """(K, D) float32 codebook as used for lookup (normalized when ``l2_normalize``)."""
        codebook = self.codebook.float()
        return F.normalize(codebook, dim=-1) if self.config.l2_normalize else codebook

    def _nearest(self, flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """(N, D) latents, (K, D) codes -> (N,) ids of the nearest code."""
        with torch.no_grad():
            sim = flat @ codebook.T  # (N, K)
            if self.config.l2_normalize:
                return sim.argmax(dim=-1)
            # ||x - c||^2 up to the per-row constant ||x||^2.
            return (codebook.pow(2).sum(dim=-1) - 2 * sim).argmin(dim=-1)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> torch.Tensor:
        """Replaces dead codes by rows of ``flat`` (N, D); returns how many, as a scalar.

        Picks a candidate for every code (hashed rows, see the module docstring) and selects with
        ``where`` so that the GPU never waits on a host-side count.
        """
        dead = self.ema_cluster_size < self.config.dead_code_threshold  # (K,) equal on every rank
        samples = torch.full_like(self.codebook, float("nan"))  # (K, D); an empty batch restarts nothing
        if flat.shape[0]:
            rank = dead.long().cumsum(0) - 1  # (K,) j for the j-th dead code (others: unused)
            picks = (rank.clamp_min(0) * _RESTART_HASH) % flat.shape[0]  # (K,) distinct for the first N dead codes
            samples.copy_(flat[picks])
        broadcast_from_first_(samples)  # rank 0's rows on every rank
        dead &= samples.isfinite().all(dim=-1)  # never restart a code at a NaN
        self.codebook.copy_(torch.where(dead[:, None], samples, self.codebook))
        # Restart the count at twice the threshold (at least once used): at 1.0 a threshold >= 1 found the code dead
        # again at the next forward, and most codes were restarted at every step, for ever.
        start = max(1.0, 2.0 * self.config.dead_code_threshold)
        if self.config.use_ema:  # the EMA as if the code had been used ``start`` times, at its new position
            self.ema_embed_sum.copy_(torch.where(dead[:, None], samples * start, self.ema_embed_sum))
        self.ema_cluster_size.masked_fill_(dead, start)
        return dead.sum().float()

    @torch.no_grad()
    def _update_ema(self, flat: torch.Tensor, ids: torch.Tensor) -> None:
        """Updates the EMA counts and, in EMA mode, the sums and the codebook.

        Args:
            flat: (N, D) latents as looked up (normalized when ``l2_normalize``).
            ids: (N,) their code ids.
        """
        cfg = self.config
        finite = flat.isfinite().all(dim=-1)  # (N,)
        weights = finite.to(self.ema_cluster_size.dtype)
        counts = torch.bincount(ids, weights=weights, minlength=self.codebook_size).to(weights.dtype)  # (K,) int if N=0
        if not cfg.use_ema:
            self.ema_cluster_size.lerp_(mean_across_ranks_(counts), 1.0 - cfg.ema_decay)
            return
        rows = torch.where(finite[:, None], flat, 0.0).to(self.ema_embed_sum.dtype)  # (N, D)
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, ids, rows)  # (K, D)
        both = mean_across_ranks_(torch.cat([counts[:, None], sums], dim=1))  # one collective: (K, 1 + D)
        self.ema_cluster_size.lerp_(both[:, 0], 1.0 - cfg.ema_decay)
        self.ema_embed_sum.lerp_(both[:, 1:], 1.0 - cfg.ema_decay)
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + cfg.ema_epsilon) / (n + self.codebook_size * cfg.ema_epsilon) * n
        codebook = self.ema_embed_sum / smoothed[:, None]  # (K, D)
        if cfg.l2_normalize:
            codebook = F.normalize(codebook, dim=-1)
        self.codebook.copy_(codebook)
