"""Tokenizer entry points used directly: the answer does not depend on an autocast around the call, a half-precision
discriminator's logits are taken, ids that are not a tensor are a ValueError, and every FSQ level list the config
takes keeps its codes apart in a bf16 decoder."""

import numpy as np
import pytest
import torch

from tokenizer.losses import LeCam
from tokenizer.quantizers import FSQ, VQ, FSQConfig, VQConfig
from tokenizer.quantizers.base import check_ids
from tokenizer.quantizers.fsq import MAX_LEVEL


@pytest.mark.parametrize("l2", [True, False])
def test_vq_codes_to_ids_gives_the_nearest_codes_under_a_bf16_autocast(l2):
    """Inside the autocast the distance matmul ran in bf16: 2.2% of positions took another code."""
    torch.manual_seed(0)
    vq = VQ(VQConfig(dim=16, codebook_size=512, l2_normalize=l2)).eval()
    z = torch.randn(4, 16, 2, 16, 16)
    want = vq(z).ids
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = vq.codes_to_ids(z)
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lecam_takes_half_precision_logits_and_keeps_fp32_averages(dtype):
    fp32, half = LeCam(0.9).train(), LeCam(0.9).train()
    real, fake = torch.randn(8, 1), torch.randn(8, 1)
    want = fp32(real.to(dtype).float(), fake.to(dtype).float())
    got = half(real.to(dtype), fake.to(dtype))
    assert got.dtype == torch.float32 and half.ema_real.dtype == torch.float32
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(half.ema_real, fp32.ema_real)


@pytest.mark.parametrize("ids", [[[[[0]]]], np.zeros((1, 1, 1, 1), np.int64)], ids=["list", "numpy"])
def test_ids_that_are_not_a_tensor_are_a_value_error(ids):
    with pytest.raises(ValueError, match="expects ids as an integer torch.Tensor"):
        check_ids(ids, 4, "decode")


def test_every_fsq_level_count_the_config_takes_keeps_distinct_codes_in_bf16():
    """Up to 1001 levels were taken; at 600 a bf16 decoder saw 556 distinct inputs for 600 ids."""
    for levels in (MAX_LEVEL, MAX_LEVEL - 1, 255):
        q = FSQ(FSQConfig(levels=(levels,)))
        ids = torch.arange(levels).reshape(1, 1, 1, levels)
        codes = q.ids_to_codes(ids).to(torch.bfloat16)
        assert codes.unique().numel() == levels
        assert torch.equal(q.codes_to_ids(codes), ids)
    with pytest.raises(ValueError, match=f"at most {MAX_LEVEL}"):
        FSQConfig(levels=(MAX_LEVEL + 1,))


def test_a_video_outside_minus_one_to_one_is_refused(repo_root):
    """frames.float() of uint8 (0..255) was encoded without a word: half the ids differed from the scaled clip's,
    and reconstruct's clamp hid it."""
    from tests.unit.test_tokenizer import tiny, video

    tok = tiny(repo_root)
    x = video(B=1)
    for bad in ((x + 1) * 127.5, x * 1.01):
        for call in (tok.encode, tok.reconstruct):
            with pytest.raises(ValueError, match=r"video values must lie in \[-1, 1\] \(uint8 frames: x / 127.5 - 1\)"):
                call(bad)
    tok.encode(x.clamp(-1, 1) * (1 + 5e-4))  # rounding past the edge (a resize, a cast) is taken


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32])
def test_ids_in_a_token_caches_unsigned_dtypes_decode(repo_root, dtype):
    """uint16 is the cache's on-disk dtype: decode(torch.from_numpy(shard)) raised NotImplementedError (no min
    kernel for UInt16) while int16 and int32 decoded."""
    from tests.unit.test_tokenizer import tiny, video

    tok = tiny(repo_root)
    ids = tok.encode(video(B=1))
    assert torch.equal(tok.decode(ids.to(dtype)), tok.decode(ids))
    with pytest.raises(ValueError, match="ids must lie in"):
        tok.decode(torch.full_like(ids, tok.codebook_size).to(dtype))


@pytest.mark.parametrize("recon_shape", [(2, 3, 1, 16, 16), (2, 9, 3, 16, 16), (1, 3, 9, 16, 16)])
def test_losses_refuse_shapes_that_differ_instead_of_broadcasting(recon_shape):
    from tokenizer.losses import LossConfig, perceptual_loss, reconstruction_loss

    target = torch.zeros(2, 3, 9, 16, 16)
    with pytest.raises(ValueError, match="must have the same shape"):
        reconstruction_loss(torch.zeros(recon_shape), target, LossConfig())
    with pytest.raises(ValueError, match="must have the same shape"):
        perceptual_loss(torch.zeros(recon_shape), target, lambda a, b: (a - b).abs())
