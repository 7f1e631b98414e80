"""Tiny class-conditional generators (GPT-style and MaskGIT) on a 3x4x4 token grid, shared by the generator,
sampling and training tests."""

import torch

from generator import Condition, Generator, GeneratorConfig
from generator.sampling import sample_ar, sample_maskgit

GRID = (3, 4, 4)
AR_ORDERS = ("token", "cube", "frame")
MG_ORDERS = ("token", "cube", "frame", "clip")


def tiny(style: str, **kw) -> Generator:
    """Without target positions a GPT-style model serves one layout: token and frame (the same raster), unless
    ``orders`` says otherwise; :func:`tiny_all` gives one that serves every order."""
    default = AR_ORDERS if kw.get("target_positions") else ("token", "frame")
    orders = kw.pop("orders", default if style == "ar" else MG_ORDERS)
    kw.setdefault("cube_size", (1, 2, 2))
    cfg = GeneratorConfig(
        style=style,
        orders=orders,
        vocab_size=64,
        max_grid=GRID,
        dim=32,
        depth=2,
        num_heads=2,
        num_classes=5,
        **kw,
    )
    torch.manual_seed(0)
    return Generator(cfg).eval()


def tiny_all(style: str, **kw) -> Generator:
    """A model that samples and trains every order of its style (GPT-style: with target positions)."""
    return tiny(style, **({"target_positions": True} if style == "ar" else {}), **kw)


def cond2():
    return Condition(labels=torch.tensor([1, 4]))


def sampler(style):
    return sample_ar if style == "ar" else sample_maskgit
