"""The static key/value cache that cached decoding writes into and samplers rewind.

Samplers own a cache (:meth:`generator.transformer.Generator.new_cache`) and pass it to every
forward pass; :class:`generator.layers.Attention` writes each layer's new keys and values into
it. It is a module only so that ``.to()`` moves its buffers.
"""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """A preallocated key/value cache for every layer: (layers, B, nh, max_len, hd) buffers.

    ``length`` is how many positions are filled. A forward pass writes its new keys and values
    at ``[length, length + n)`` and advances ``length``; a sampler that only probes (MaskGIT
    steps) calls :meth:`rewind` afterwards. ``valid`` marks real positions (text padding is
    False) and is the key mask every later query uses.
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (num_layers, batch, num_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("valid", torch.zeros(batch, max_len, dtype=torch.bool, device=device), persistent=False)
        self.max_len = max_len
        self.length = 0
        self._padded_until = 0  # positions >= this are all valid (a bound kept without reading `valid`)

    @property
    def all_valid(self) -> bool:
        """True when every filled position is a valid key, so queries need no key mask."""
        return self._padded_until == 0

    def reset(self) -> None:
        self.length = 0
        self._padded_until = 0

    def rewind(self, length: int) -> None:
        """Forgets every position from ``length`` on."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot rewind a cache of length {self.length} to {length}")
        self.length = length
        self._padded_until = min(self._padded_until, length)

    def reserve(self, n: int, valid: torch.Tensor | None = None) -> tuple[int, int]:
        """Claims ``n`` positions whose key validity is ``valid`` (B, n), None = all valid;
        returns (start, stop)."""
        start, stop = self.length, self.length + n
        if stop > self.max_len:
            raise ValueError(f"KV cache overflow: {stop} positions needed, {self.max_len} allocated")
        if valid is None:
            self.valid[:, start:stop] = True
        else:
            self.valid[:, start:stop] = valid
            if not bool(valid.all()):
                self._padded_until = stop
        self.length = stop
        return start, stop
