"""The causal 3D tokenizer: shapes, causality, chunking, save/load and bad input."""

import re

import pytest
import torch
import yaml

from core.config import build_config
from tokenizer import TokenizerConfig, VideoTokenizer


def tiny(repo_root, *overrides) -> VideoTokenizer:
    cfg = build_config(TokenizerConfig, [repo_root / "configs/tiny/tokenizer.yaml"], list(overrides))
    return VideoTokenizer(cfg).eval()


def video(T=9, H=32, W=32, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, T, H, W, generator=g) * 2 - 1


@pytest.mark.parametrize("T", [1, 5, 9, 17])
def test_shapes_images_and_videos(repo_root, T):
    tok = tiny(repo_root)
    ids = tok.encode(video(T=T))
    assert ids.shape == (2, 1 + (T - 1) // 4, 4, 4) and ids.dtype == torch.long
    assert int(ids.max()) < tok.codebook_size == 64
    out = tok.decode(ids)
    assert out.shape == (2, 3, T, 32, 32)
    assert tok.latent_shape(T, 32, 32) == tuple(ids.shape[1:])


def test_device_and_last_decoder_weight(repo_root):
    tok = tiny(repo_root)
    assert tok.device == torch.device("cpu")
    last = tok.last_decoder_weight
    assert any(p is last for p in tok.decoder.parameters())
    recon = tok(video(T=5, B=1)).recon
    (grad,) = torch.autograd.grad(recon.square().sum(), last)  # what VQGAN's adaptive weight needs
    assert grad.shape == last.shape and grad.abs().sum() > 0
    assert tok.to("meta").device.type == "meta"


def test_inputs_on_another_device_than_the_tokenizer_are_one_error(repo_root):
    """A CPU clip on a CUDA tokenizer failed deep in oneDNN ("itensor_view_from_dense expects CPU tensor input")."""
    tok = tiny(repo_root)
    ids = tok.encode(video(T=5, B=1))
    tok.to("meta")  # another device than the inputs', on any machine
    with pytest.raises(ValueError, match="video is on cpu, the tokenizer on meta"):
        tok.encode(video(T=5, B=1))
    with pytest.raises(ValueError, match="ids are on cpu, the tokenizer on meta"):
        tok.decode(ids)


@pytest.mark.parametrize(
    "ct,cs,mult", [(1, 4, (1, 2, 2)), (2, 4, (1, 2, 2)), (8, 4, (1, 1, 2, 2)), (2, 16, (1, 1, 2, 2, 2))]
)
def test_compression_factors(repo_root, ct, cs, mult):
    tok = tiny(repo_root, f"temporal_compression={ct}", f"spatial_compression={cs}", f"channel_mult={list(mult)}")
    T = 1 + 2 * ct
    ids = tok.encode(video(T=T, H=32, W=32, B=1))
    assert ids.shape == (1, 3, 32 // cs, 32 // cs)
    assert tok.decode(ids).shape == (1, 3, T, 32, 32)


def test_channel_mult_must_match_compression(repo_root):
    with pytest.raises(ValueError, match="needs exactly 4"):
        tiny(repo_root, "channel_mult=[1, 2]")
    with pytest.raises(ValueError, match="needs exactly 3"):  # patch 2 leaves 4x spatial for the stages
        tiny(repo_root, "patch_size=2")


def test_patch_size_and_spatial_only_stages(repo_root):
    tok = tiny(repo_root, *FACTORIZED)
    assert tok.encoder.conv_in.conv.in_channels == 12  # 3 colours x 2 x 2 pixels
    assert tok.encoder.conv_in.conv.kernel_size == (1, 3, 3)
    assert tok.decoder.conv_out.conv.kernel_size == (1, 3, 3)
    x = video(T=9)
    ids = tok.encode(x)
    assert ids.shape == (2, 3, 4, 4)
    assert tok.decode(ids).shape == x.shape
    for bad, match in [
        ("patch_size=3", "patch_size must be"),
        ("spatial_only_stages=3", "spatial_only_stages must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            tiny(repo_root, "patch_size=2", "channel_mult=[1, 2, 2]", bad)


class PassThrough(torch.nn.Module):
    def forward(self, x, state=None):
        return x


def test_space_to_depth_is_lossless_and_aligned(repo_root):
    """Pixel (i, j) of channel c must come back at (i, j) of channel c: decoding what an
    identity network would pass through has to invert the encoder's folding exactly."""
    tok = tiny(repo_root, *FACTORIZED)
    x = video(T=1)
    folded = x.reshape(2, 3, 1, 16, 2, 16, 2).permute(0, 1, 4, 6, 2, 3, 5).reshape(2, 12, 1, 16, 16)
    tok.encoder = tok.decoder = PassThrough()  # the latents are the folded pixels themselves
    assert torch.equal(tok._latents(x), folded)
    assert torch.equal(tok._pixels(folded), x)


@pytest.mark.parametrize("quantizer", ["vq", "fsq", "lfq", "bsq"])
def test_every_quantizer_plugs_in(repo_root, quantizer):
    tok = tiny(repo_root, f"quantizer={quantizer}")
    x = video(T=5)
    out = tok.train()(x)
    assert out.recon.shape == x.shape and out.ids.shape == (2, 2, 4, 4)
    assert "usage" in out.stats and "perplexity" in out.stats
    tok.eval()
    ids = tok.encode(x)
    assert torch.equal(tok.encode(x), ids)  # eval-mode encoding is a pure function
    assert tok.decode(ids).shape == x.shape


# Space-to-depth input and per-frame full-resolution stages: the cheap layout of the shapes model.
FACTORIZED = ("patch_size=2", "channel_mult=[1, 2, 2]", "spatial_only_stages=1")


@pytest.mark.parametrize("layout", [(), FACTORIZED], ids=["plain", "factorized"])
def test_encoder_is_causal(repo_root, layout):
    tok = tiny(repo_root, *layout)
    x = video(T=17)
    with torch.no_grad():
        base = tok._latents(x)
        for k in (1, 4, 5, 12, 16):
            y = x.clone()
            y[:, :, k] += 0.5
            z = tok._latents(y)
            first_affected = (k + 3) // 4  # frame 0 -> latent 0, frames 1..4 -> latent 1, ...
            assert torch.equal(z[:, :, :first_affected], base[:, :, :first_affected]), k
            assert not torch.allclose(z[:, :, first_affected], base[:, :, first_affected])


@pytest.mark.parametrize("layout", [(), FACTORIZED], ids=["plain", "factorized"])
def test_decoder_is_causal(repo_root, layout):
    tok = tiny(repo_root, *layout)
    ids = torch.randint(0, 64, (1, 5, 4, 4))
    base = tok.decode(ids)
    for j in (1, 3, 4):
        other = ids.clone()
        other[:, j] = (other[:, j] + 7) % 64
        out = tok.decode(other)
        first_frame = 1 + (j - 1) * 4
        assert torch.equal(out[:, :, :first_frame], base[:, :, :first_frame]), j
        assert not torch.allclose(out[:, :, first_frame], base[:, :, first_frame])


@pytest.mark.parametrize("layout", [(), FACTORIZED], ids=["plain", "factorized"])
@pytest.mark.parametrize("chunk", [4, 8])
def test_chunked_encode_and_decode_equal_one_pass(repo_root, chunk, layout):
    tok = tiny(repo_root, "attention=true", *layout)
    x = video(T=25, B=1)
    full = tok.encode(x)
    assert torch.equal(tok.encode(x, chunk_frames=chunk), full)
    dec = tok.decode(full)
    assert torch.allclose(tok.decode(full, chunk_latents=chunk // 4), dec, atol=1e-5)


def test_save_load_is_bit_identical(repo_root, tmp_path):
    tok = tiny(repo_root, "quantizer=vq")
    tok.train()(video(T=5))  # move the EMA codebook away from its init
    tok.eval()
    tok.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.yaml", "model.safetensors"]
    again = VideoTokenizer.from_pretrained(tmp_path / "tok")
    x = video(T=9)
    assert again.config == tok.config
    assert torch.equal(again.encode(x), tok.encode(x))
    assert torch.equal(again.decode(tok.encode(x)), tok.decode(tok.encode(x)))


def test_load_mismatch_names_keys_and_shapes(repo_root, tmp_path):
    tiny(repo_root).save_pretrained(tmp_path)
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["base_channels"] = 16
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError) as err:
        VideoTokenizer.from_pretrained(tmp_path)
    message = str(err.value)  # names the folder, then the first keys with both shapes
    assert message.startswith(f"tokenizer {str(tmp_path)!r} weights do not match its config: ") and "more]" in message
    assert re.search(r"\d+ shape mismatches \[[\w.]+: weights \([\d, ]+\) vs model \([\d, ]+\)", message)


def test_load_rejects_corrupt_or_missing(tmp_path, repo_root):
    with pytest.raises(ValueError, match="does not exist"):
        VideoTokenizer.from_pretrained(tmp_path / "nope")
    tiny(repo_root).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        VideoTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((3, 9, 32, 32), "rank 4"),
        ((1, 1, 9, 32, 32), "1 channels"),
        ((1, 3, 6, 32, 32), "not of the form 1 \\+ k\\*4"),
        ((1, 3, 9, 30, 32), "multiples of 8"),
    ],
)
def test_bad_video_names_expected_shape(repo_root, shape, match):
    tok = tiny(repo_root)
    with pytest.raises(ValueError, match=match) as err:
        tok.encode(torch.zeros(shape))
    assert "(B, 3, 1 + k*4, H, W)" in str(err.value)


def test_non_finite_video_is_rejected(repo_root):
    x = video(T=5)
    x[0, 0, 2, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tiny(repo_root).encode(x)


def test_bad_ids_are_rejected(repo_root):
    tok = tiny(repo_root)
    with pytest.raises(ValueError):
        tok.decode(torch.full((1, 2, 4, 4), 64))
    with pytest.raises(ValueError):
        tok.decode(torch.zeros(1, 4, 4, dtype=torch.long))


def test_encoding_in_training_mode_leaves_a_vq_codebook_alone(repo_root):
    """encode() ran the quantizer's training pass when the module was in training mode: a VQ codebook moved
    (moving averages, dead-code restarts), so the ids it returned no longer decoded with the codebook left."""
    tok = tiny(repo_root, "quantizer=vq", "vq.codebook_size=64", "vq.dim=4").train()
    before = {k: v.clone() for k, v in tok.quantizer.state_dict().items()}
    first = tok.encode(video(T=9))
    assert all(torch.equal(before[k], v) for k, v in tok.quantizer.state_dict().items())
    assert torch.equal(first, tok.encode(video(T=9))) and tok.quantizer.training  # the mode is given back


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_batch_one_convolutions_run_on_onednn(repo_root):
    """At batch 1 PyTorch sent most of the tokenizer's fp32 convolutions to its reference kernel (slow_conv3d),
    3-6x slower than oneDNN, which it uses at batch 2; decoding the shipped model's 17 frames took 0.27 s, not 0.09."""
    from torch.profiler import profile

    tok = tiny(repo_root)
    with torch.inference_mode(), profile() as prof:
        ids = tok.encode(video(T=5, B=1))
        tok.decode(ids)
    ops = {e.key for e in prof.key_averages()}
    assert "aten::mkldnn_convolution" in ops and not any("slow_conv3d" in op for op in ops)
    # the same numbers as PyTorch's own convolution, forward and backward
    conv = tok.decoder.conv_in.conv
    x = video(T=3, H=8, W=8, B=1)[:, :1].expand(1, conv.in_channels, 3, 8, 8).contiguous().requires_grad_()
    ours = conv(x)
    ref = torch.nn.functional.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-4)


def test_empty_inputs_and_non_integer_chunks_are_one_value_error(repo_root):
    """An empty batch divided by zero inside attention's rearrange (or gave an empty result without attention),
    an empty latent grid failed deep in the decoder, and chunk_frames=4.0 or chunk_latents=1.5 were a TypeError."""
    tok = tiny(repo_root)
    cases = [
        (lambda: tok.encode(torch.zeros(0, 3, 5, 32, 32)), "at least one clip"),
        (lambda: tok.decode(torch.zeros(0, 2, 4, 4, dtype=torch.long)), "non-empty"),
        (lambda: tok.decode(torch.zeros(1, 0, 4, 4, dtype=torch.long)), "non-empty"),
        (lambda: tok.encode(video(T=9, B=1), chunk_frames=4.0), "chunk_frames must be a positive multiple"),
        (lambda: tok.decode(torch.zeros(1, 3, 4, 4, dtype=torch.long), chunk_latents=1.5), "chunk_latents must be"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_tokenizer_convolutions_follow_a_cpu_autocast(repo_root):
    """The oneDNN shortcut called the aten op directly, which autocast does not cover: under run.precision=bf16
    on CPU every tokenizer convolution stayed fp32 while nn.Conv3d ran in bf16."""
    conv = tiny(repo_root).encoder.conv_in.conv
    x = torch.randn(1, conv.in_channels, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
    assert conv(x).dtype == torch.float32


@pytest.mark.parametrize("quantizer", ["vq", "fsq", "lfq", "bsq"])
def test_an_encoder_that_gives_nan_is_an_error_not_a_constant_token_grid(repo_root, quantizer):
    """Every quantizer maps a NaN latent to a valid id (FSQ its middle code, the others 0): a tokenizer whose
    weights had gone NaN encoded every video to one constant grid, which the cache stored and the pipelines
    continued, without a word."""
    tok = tiny(repo_root, f"quantizer={quantizer}")
    with torch.no_grad():
        next(p for name, p in tok.encoder.named_parameters() if name.endswith("bias"))[0] = float("nan")
    for chunk in (None, 4):
        with pytest.raises(ValueError, match="encoder gave NaN or infinite latents"):
            tok.encode(video(T=5), chunk_frames=chunk)
