"""Training-side access to a token cache: random access by global index and resumable shuffling.

::

    cache = TokenCache("cache/", expect_fingerprint=tokenizer_fingerprint("runs/tok/tokenizer"))
    sampler = ShuffledSampler(len(cache), seed=0, rank=rank, world_size=world_size)
    sample = cache[next(iter(sampler))]  # TokenSample(ids (t, h, w) long, label, caption, ...)

Global index ``i`` counts clips over the manifest's shards in order, which is work-item order
``(source, clip)``, so the same index names the same clip whether the cache was written by one
rank or many. Shards are memory-mapped lazily on first access (``np.load(mmap_mode="r")``,
never unpickling), so opening a cache costs only the manifest read, and a ``TokenCache``
pickles cheaply into DataLoader workers (open maps are dropped and reopened there).
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from core.checks import has_text
from videodata.cache.format import (
    META_DTYPE,
    SHARD_FILES,
    load_manifest,
    read_json,
    sha256_bytes,
    tokenizer_fingerprint,
)

__all__ = ["ShuffledSampler", "TokenCache", "TokenSample", "tokenizer_fingerprint"]

_CAPTION_SHARDS_KEPT = 16  # caption lists held in memory (an LRU; token arrays are mmaps)
# Shards kept memory-mapped (an LRU): each map holds an open file (CPython's mmap keeps a duplicate of the
# descriptor), two per shard, and an epoch over a 1,000-shard cache passed the usual limit of 1,024 open files.
_ARRAY_SHARDS_KEPT = 64


@dataclass(frozen=True)
class TokenSample:
    """One cached clip.

    Attributes:
        ids: (t, h, w) long token ids.
        label: class label, -1 when the source had none.
        caption: the (first) caption, "" when the source had none.
        captions: every caption of the source (empty when it had none).
        source: index of the source file in the manifest's ``sources``.
        start: first source frame of the clip.
    """

    ids: torch.Tensor
    label: int
    caption: str
    source: int
    start: int
    captions: tuple[str, ...] = ()


class TokenCache(Dataset):
    """A finished token cache, read-only.

    Args:
        cache_dir: folder holding ``manifest.json`` (from ``tools/cache_tokens.py``).
        expect_fingerprint: tokenizer fingerprint the training run uses (see
            :func:`tokenizer_fingerprint`); a different one is refused.
        expect_codebook_size: codebook size the model was built for.
        expect_grid: (t, h, w) token grid the model was built for.

    Raises:
        ValueError: no or unreadable manifest, or an expectation that the cache does not meet
            (the message names both values).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        *,
        expect_fingerprint: str | None = None,
        expect_codebook_size: int | None = None,
        expect_grid: Sequence[int] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.manifest = load_manifest(self.cache_dir)
        self.fingerprint: str = self.manifest["tokenizer"]["fingerprint"]
        self.codebook_size: int = int(self.manifest["codebook_size"])
        self.grid: tuple[int, int, int] = tuple(self.manifest["grid"])
        where = f"token cache {str(self.cache_dir)!r}"
        if expect_fingerprint is not None and expect_fingerprint != self.fingerprint:
            raise ValueError(
                f"{where} was made by tokenizer {self.fingerprint}, but this run expects {expect_fingerprint}"
            )
        if expect_codebook_size is not None and expect_codebook_size != self.codebook_size:
            raise ValueError(
                f"{where} has codebook size {self.codebook_size}, but this run expects {expect_codebook_size}"
            )
        if expect_grid is not None and tuple(expect_grid) != self.grid:
            raise ValueError(f"{where} has token grid {self.grid}, but this run expects {tuple(expect_grid)}")
        self.shards: list[dict[str, Any]] = self.manifest["shards"]
        self._dtype = np.dtype(self.manifest["dtype"])
        self._starts = np.cumsum([0] + [s["num_clips"] for s in self.shards]).tolist()  # first global index per shard
        self._open_maps()

    def _open_maps(self) -> None:
        self._arrays_kept: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # shard: (tokens, meta)
        self._captions: OrderedDict[int, list[str | list[str]]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_arrays_kept", "_captions"):
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_maps()

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def content_id(self) -> str:
        """sha256 over the shards' names, clip counts and the sha256 of their token, meta and captions files: the
        same for a copy or a moved folder, different for any other content or order (a training run that resumes
        on another cache would draw its held-out split and its data position from other clips)."""
        rows = [[s["name"], s["num_clips"], *(s["files"][kind]["sha256"] for kind in SHARD_FILES)] for s in self.shards]
        return sha256_bytes(json.dumps(rows, separators=(",", ":")).encode())

    @property
    def sources(self) -> list[dict[str, Any]]:
        """The manifest's sources: ``{"path", "caption", "label"}`` each."""
        return self.manifest["sources"]

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, row in that shard) of a global index (negative counts from the end)."""
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a token cache of {n} clips")
        index = int(index) % n
        shard = bisect.bisect_right(self._starts, index) - 1
        return shard, index - self._starts[shard]

    def __getitem__(self, index: int) -> TokenSample:
        shard, row = self.locate(index)
        tokens, meta = self._arrays(shard)
        m = meta[row]
        entry = self._shard_captions(shard)[row]
        captions = tuple(entry) if isinstance(entry, list) else ((entry,) if entry else ())
        return TokenSample(
            ids=torch.from_numpy(tokens[row].astype(np.int64)),  # (t, h, w)
            label=int(m["label"]),
            caption=captions[0] if captions else "",
            source=int(m["source"]),
            start=int(m["start"]),
            captions=captions,
        )

    def labels(self) -> np.ndarray:
        """(N,) int64 class label of every clip in index order, -1 where the source had none."""
        return self._meta_column("label")

    def source_ids(self) -> np.ndarray:
        """(N,) int64 source index (into :attr:`sources`) of every clip in index order."""
        return self._meta_column("source")

    def _meta_column(self, name: str) -> np.ndarray:
        if not self.shards:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self._arrays(i)[1][name].astype(np.int64) for i in range(len(self.shards))])  # copies

    def captionless(self) -> list[int]:
        """Indices of the clips with no caption or with a blank one (every shard's captions file is read once).

        Training draws any one of a clip's captions: a single blank one among good ones ("   ", a zero-width space)
        stopped a text-conditional run when it was drawn, so it counts too."""
        return [
            i
            for i, captions in enumerate(self.all_captions())
            if not captions or not all(isinstance(c, str) and has_text(c) for c in captions)
        ]

    def all_captions(self) -> list[list]:
        """Every clip's captions in index order, as stored (a list per clip; no caption gives ``[]``)."""
        out = []
        for shard in range(len(self.shards)):
            for item in self._shard_captions(shard):
                out.append(list(item) if isinstance(item, list) else ([item] if item else []))
        return out

    def _arrays(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, meta) of a shard, memory-mapped; rows read from them must be copied (``__getitem__`` does), as
        a shard that falls out of the LRU is unmapped once nothing refers to it."""
        if shard in self._arrays_kept:
            self._arrays_kept.move_to_end(shard)
            return self._arrays_kept[shard]
        entry = self.shards[shard]
        tokens = self._load(entry, "tokens")
        meta = self._load(entry, "meta")
        if tokens.shape != (entry["num_clips"], *self.grid) or tokens.dtype != self._dtype:
            raise ValueError(
                f"shard {entry['name']} holds {tokens.dtype} {tokens.shape}; the manifest says "
                f"{self._dtype} {(entry['num_clips'], *self.grid)}"
            )
        if meta.dtype != META_DTYPE or meta.shape != (entry["num_clips"],):
            raise ValueError(f"shard {entry['name']} has meta {meta.dtype} {meta.shape}, expected {META_DTYPE}")
        self._arrays_kept[shard] = tokens, meta
        if len(self._arrays_kept) > _ARRAY_SHARDS_KEPT:
            self._arrays_kept.popitem(last=False)  # its maps close when the last reference goes
        return tokens, meta

    def _load(self, entry: dict[str, Any], kind: str) -> np.ndarray:
        path = self.cache_dir / entry["files"][kind]["file"]
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"shard {entry['name']}: cannot read {kind} file {str(path)!r}: {err}") from None

    def _shard_captions(self, shard: int) -> list[str | list[str]]:
        if shard in self._captions:
            self._captions.move_to_end(shard)
        else:
            entry = self.shards[shard]
            captions = read_json(self.cache_dir / entry["files"]["captions"]["file"], f"shard {entry['name']} captions")
            if not isinstance(captions, list) or len(captions) != entry["num_clips"]:
                raise ValueError(f"shard {entry['name']}: captions file does not hold {entry['num_clips']} entries")
            self._captions[shard] = captions
            if len(self._captions) > _CAPTION_SHARDS_KEPT:
                self._captions.popitem(last=False)
        return self._captions[shard]


class ShuffledSampler(Sampler[int]):
    """Deterministic per-epoch shuffling, split across ranks, resumable mid-epoch.

    Epoch ``e`` uses the permutation of ``range(n)`` drawn from ``SeedSequence([seed, e])``
    (numpy PCG64). Rank ``r`` takes every ``world_size``-th entry from position ``r``; unless
    ``drop_last``, the permutation is first padded with its own head so every rank gets the
    same number of samples (as ``DistributedSampler`` does).

    Iterating yields this rank's remaining indices of the current epoch from ``position``,
    then moves to the next epoch. ``position`` counts indices handed out, so with a DataLoader
    whose workers prefetch, save ``{"epoch", "position": samples_consumed, "seed"}`` from the
    training loop's own count rather than the sampler's.

    Args:
        n: dataset size, >= 1.
        seed: base seed, >= 0.
        rank: this rank, in [0, world_size).
        world_size: number of ranks.
        drop_last: drop the tail instead of padding (ranks still get equal counts).
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, drop_last: bool = False) -> None:
        if n < 1:
            raise ValueError(f"ShuffledSampler needs n >= 1, got {n}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if drop_last and n < world_size:
            raise ValueError(f"drop_last with n={n} < world_size={world_size} leaves no samples")
        self.n, self.seed, self.rank, self.world_size, self.drop_last = n, seed, rank, world_size, drop_last
        self.epoch = 0
        self.position = 0

    def permutation(self, epoch: int) -> np.ndarray:
        """The full (n,) permutation of epoch ``epoch`` (the same on every rank)."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
        return rng.permutation(self.n)

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's (len(self),) indices of epoch ``epoch``."""
        perm = self.permutation(epoch)
        total = len(self) * self.world_size
        if total > self.n:  # pad with the permutation's head (repeated if n < world_size)
            perm = np.resize(perm, total)
        return perm[self.rank : total : self.world_size]

    def __len__(self) -> int:
        per_rank = self.n // self.world_size if self.drop_last else math.ceil(self.n / self.world_size)
        return per_rank

    def __iter__(self) -> Iterator[int]:
        indices = self.indices(self.epoch)
        while self.position < len(indices):
            i = int(indices[self.position])
            self.position += 1
            yield i
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Starts epoch ``epoch`` from its beginning (``DistributedSampler`` compatible)."""
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continues exactly where ``state`` was taken (same n, rank and world size assumed)."""
        missing = {"epoch", "position", "seed"} - set(state)
        if missing:
            raise ValueError(f"sampler state lacks {sorted(missing)}")
        epoch, position, seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        if epoch < 0 or not 0 <= position <= len(self) or seed < 0:
            raise ValueError(f"sampler state {dict(state)} does not fit {len(self)} samples per epoch")
        self.epoch, self.position, self.seed = epoch, position, seed
