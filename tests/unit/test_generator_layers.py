"""The generator's layers: the xformers bias and its SDPA fallback, the decoding layout, RMSNorm, bias-free
block linears and rotary frequencies."""

import pytest
import torch

from generator import Generator, make_layout
from generator.layers import DecodingLinear
from tests.helpers.tiny_generator import GRID, cond2, tiny


def test_xformers_bias_is_aligned_and_equals_the_mask():
    """xformers needs a materialized bias whose rows start on 8-element boundaries (keys padded, then sliced)."""
    from generator.layers import xformers_bias

    for K in (5, 8, 13, 330):
        mask = torch.rand(1, 1, 7, K) > 0.3
        bias = xformers_bias(mask, torch.float32, (2, 3, 7, K))
        assert bias.shape == (2, 3, 7, K) and bias.stride(-2) % 8 == 0 and bias.stride(1) != 0
        assert torch.equal(bias == 0, mask.expand(2, 3, 7, K)) and torch.isinf(bias[~mask.expand(2, 3, 7, K)]).all()
    for dtype in (torch.bfloat16, torch.float16):  # the attention's dtype: xformers refuses a bias of another
        assert xformers_bias(mask, dtype, (2, 3, 7, 330)).dtype == dtype


def test_decoding_layout_keeps_values_outputs_and_the_state_dict():
    m = tiny("ar")
    state = {k: v.clone() for k, v in m.state_dict().items()}
    ids = torch.randint(0, 64, (2, 5))
    coords, mask = make_layout((1, 2, 4), "token").coords[:5], torch.ones(5, 5, dtype=torch.bool).tril()
    with torch.no_grad():
        before = m(ids, cond2(), coords=coords, mask=mask)
        m.decoding_layout_()
        after = m(ids, cond2(), coords=coords, mask=mask)
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    decoding = [mod for mod in linears if isinstance(mod, DecodingLinear)]
    assert decoding == linears and all(mod.decoding and mod.weight.is_contiguous() for mod in decoding)
    text = tiny("ar", cond="text", text_dim=12, max_text_len=6).decoding_layout_()
    others = [mod for mod in text.modules() if type(mod) is torch.nn.Linear]  # the text projection's
    assert others and all(mod.weight.t().is_contiguous() and not mod.weight.is_contiguous() for mod in others)
    assert state.keys() == m.state_dict().keys() and all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert torch.allclose(before, after, atol=1e-5)


def test_decoding_layout_keeps_frozen_weights_frozen():
    """A frozen model (a pipeline's generator) must stay frozen: the new parameters keep ``requires_grad``."""
    m = tiny("ar").requires_grad_(False)
    m.blocks[0].attn.qkv.weight.requires_grad_(True)  # one trainable weight among frozen ones
    m.decoding_layout_()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.0.attn.qkv.weight"}


def test_rms_norm_follows_its_formula_with_its_weight_and_eps():
    """x / sqrt(mean(x^2) + eps) * weight; small inputs show eps (1e-6), a learned weight scales each channel."""
    from generator.layers import RMSNorm

    norm = RMSNorm(4, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
    x = torch.tensor([[1e-4, -2e-4, 3e-4, 0.0], [1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    torch.testing.assert_close(norm(x.float()).double(), expected, rtol=1e-5, atol=1e-6)


def test_xformers_backend_falls_back_to_sdpa_off_cuda():
    """attention_backend 'xformers' is CUDA-only: on CPU the same weights give SDPA's logits."""
    import dataclasses

    sdpa = tiny("ar")
    xf = Generator(dataclasses.replace(sdpa.config, attention_backend="xformers"))
    xf.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, 64, (2, 5))
    coords, mask = make_layout((1, 2, 4), "token").coords[:5], torch.ones(5, 5, dtype=torch.bool).tril()
    with torch.no_grad():
        assert torch.equal(xf(ids, cond2(), coords=coords, mask=mask), sdpa(ids, cond2(), coords=coords, mask=mask))


def test_transformer_blocks_have_bias_free_linears_and_the_stated_widths():
    """Block linears carry no bias (the parameter layout saved models rely on); SwiGLU's hidden width is rounded up
    to a multiple of 8 (a multiple stays as it is); RoPE tables are not saved."""
    from generator.layers import Attention, SwiGLU

    m = tiny("ar")
    for block in m.blocks:
        for lin in (block.attn.qkv, block.attn.proj, block.mlp.w13, block.mlp.w2):
            assert lin.bias is None
    assert SwiGLU(32, 40).w2.in_features == 40 and SwiGLU(32, 41).w2.in_features == 48
    assert SwiGLU(32, 41).w13.out_features == 96
    assert not any("rope" in k or k.startswith("inv_") for k in m.state_dict())
    with pytest.raises(ValueError, match="^dim 30 is not divisible by num_heads 4$"):
        Attention(30, 4)


def test_rotary_frequencies_stay_float32_when_the_model_is_cast():
    """``.to(bfloat16)`` rounded the inverse frequencies to 8 bits (0.1 -> 0.10010, up to 0.1% off): every rotary angle
    of a bf16 model was off against the fp32 model it was made from, by up to 0.002 rad on the shipped generator's
    5x8x8 grid."""
    m32 = tiny("ar")
    for dtype in (torch.bfloat16, torch.float16):
        m = tiny("ar").to(dtype)
        for axis in "thw":
            ref, got = getattr(m32.rope, f"inv_{axis}"), getattr(m.rope, f"inv_{axis}")
            assert got.dtype == torch.float32 and torch.equal(got, ref)
        coords = make_layout(GRID, "token").coords
        assert torch.equal(m.rope.angles(coords), m32.rope.angles(coords))
    m = tiny("ar").to(torch.bfloat16).float()  # and back: not the rounded values cast up
    assert torch.equal(m.rope.inv_h, m32.rope.inv_h)
