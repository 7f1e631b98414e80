"""The text path: a tiny random T5 (SentencePiece trained in the test) conditions both styles."""

import pytest
import torch

from generator import Condition, Generator, GeneratorConfig, ObjectiveConfig, generator_loss, make_layout
from generator.sampling import DecodeContext, SamplingConfig, sample_ar, sample_maskgit
from generator.text_encoders import TextEncoderConfig, load_text_encoder
from tests.helpers.tiny_text import make_tiny_t5

GRID = (2, 4, 4)
MAX_LEN = 24


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("t5")
    make_tiny_t5(path)
    return load_text_encoder(TextEncoderConfig(kind="t5", path=str(path), max_length=MAX_LEN))


def text_cond(encoder, prompts):
    feats = encoder.encode(prompts)
    return Condition(text=feats.features, text_mask=feats.mask)


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("style,order", [("ar", "frame"), ("maskgit", "frame"), ("maskgit", "clip")])
def test_text_conditioned_training_and_sampling(encoder, style, order, pooled):
    cfg = GeneratorConfig(
        text_pooled=pooled,
        style=style,
        orders=(order,),
        vocab_size=64,
        max_grid=GRID,
        dim=32,
        depth=2,
        num_heads=2,
        cond="text",
        text_dim=encoder.dim,
        max_text_len=MAX_LEN,
    )
    model = Generator(cfg)
    cond = text_cond(encoder, ["a red circle moving left", "a big blue square sliding up slowly"])
    out = generator_loss(
        model.train(),
        torch.randint(0, 64, (2, *GRID)),
        cond,
        ObjectiveConfig(cond_dropout=0.5),
        torch.Generator().manual_seed(0),
    )
    out.loss.backward()
    assert model.cond_emb.text_proj[0].weight.grad.abs().sum() > 0
    model.eval()
    sc = SamplingConfig(cfg_scale=3.0, steps=3)
    fn = sample_ar if style == "ar" else sample_maskgit
    ids = fn(model, cond, GRID, order=order, sampling=sc, generator=torch.Generator().manual_seed(0))
    assert ids.shape == (2, *GRID) and int(ids.max()) < 64


@pytest.mark.parametrize("pooled", [False, True])
def test_prompts_change_logits_and_padding_does_not(encoder, pooled):
    cfg = GeneratorConfig(
        text_pooled=pooled,
        style="maskgit",
        orders=("clip",),
        vocab_size=64,
        max_grid=GRID,
        dim=32,
        depth=2,
        num_heads=2,
        cond="text",
        text_dim=encoder.dim,
        max_text_len=MAX_LEN,
    )
    model = Generator(cfg).eval()
    layout = make_layout(GRID, "clip")
    ids = torch.full((1, 32), 64)

    def logits(cond):
        return DecodeContext(model, cond, SamplingConfig(), 32, use_cache=True).logits(
            ids, layout.coords, keep=False, progress=0
        )

    a = logits(text_cond(encoder, ["a red circle moving left"]))
    b = logits(text_cond(encoder, ["a green triangle going down"]))
    assert (a - b).abs().max() > 1e-4
    # garbage in the padded feature rows is ignored through the mask
    cond = text_cond(encoder, ["a red circle moving left"])
    noisy = cond.text.clone()
    noisy[~cond.text_mask] = torch.randn_like(noisy[~cond.text_mask]) * 10
    c = logits(Condition(text=noisy, text_mask=cond.text_mask))
    assert (a - c).abs().max() < 1e-5
    # NaN or inf there (an encoder overflowing on its padding) made every logit NaN: 0 * NaN in attention
    for bad in (float("nan"), float("inf")):
        noisy[~cond.text_mask] = bad
        d = logits(Condition(text=noisy, text_mask=cond.text_mask))
        assert torch.isfinite(d).all() and (a - d).abs().max() < 1e-5


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_rejected(encoder, prompt):
    with pytest.raises(ValueError, match="empty"):
        encoder.encode(["a red circle", prompt])


def test_text_generator_needs_text(encoder):
    cfg = GeneratorConfig(
        style="ar",
        orders=("token",),
        vocab_size=64,
        max_grid=GRID,
        dim=32,
        depth=2,
        num_heads=2,
        cond="text",
        text_dim=encoder.dim,
        max_text_len=MAX_LEN,
    )
    with pytest.raises(ValueError, match="text-conditional"):
        sample_ar(Generator(cfg).eval(), Condition(labels=torch.tensor([1])), GRID)
    # Hand-made features whose mask marks no token: the prefix attended to nothing and gave NaN everywhere.
    text = torch.randn(2, MAX_LEN, encoder.dim)
    mask = torch.zeros(2, MAX_LEN, dtype=torch.bool)
    mask[0, :3] = True
    with pytest.raises(ValueError, match=r"text_mask row\(s\) \[1\] mark no token"):
        sample_ar(Generator(cfg).eval(), Condition(text=text, text_mask=mask), GRID)
    dropped = Condition(text=text, text_mask=mask, drop=torch.tensor([False, True]))  # the null condition: fine
    assert sample_ar(Generator(cfg).eval(), dropped, GRID).shape == (2, *GRID)


def test_pooled_token_ignores_padding_and_word_order_and_has_a_null():
    from generator.conditioning import ConditionEmbedder

    torch.manual_seed(0)
    emb = ConditionEmbedder("text", 16, 0, 8, 6, text_pooled=True)
    assert emb.prefix_len == 7
    text = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    out, valid = emb(Condition(text=text, text_mask=mask))
    assert out.shape == (2, 7, 16) and valid[:, 0].all() and torch.equal(valid[:, 1:], mask)
    padded = text.clone()
    padded[~mask] = 100.0
    shuffled = text.clone()
    shuffled[0, :4] = text[0, [2, 0, 3, 1]]
    assert torch.allclose(emb(Condition(text=padded, text_mask=mask))[0][:, 0], out[:, 0])
    assert torch.allclose(emb(Condition(text=shuffled, text_mask=mask))[0][0, 0], out[0, 0], atol=1e-6)
    assert not torch.allclose(out[0, 0], out[1, 0])
    dropped, _ = emb(Condition(text=text, text_mask=mask, drop=torch.tensor([True, False])))
    assert torch.equal(dropped[0, 0], emb.null_pooled[0]) and torch.equal(dropped[1], out[1])


def test_condition_inputs_of_the_wrong_type_or_shape_are_refused():
    """Each of these ran before: a tokenizer's 0/1 long ``attention_mask`` failed deep in SDPA, a float mask in a
    bitwise op, a wrong text width in a matmul, a 0-d label tensor with an IndexError, and a (1,) ``drop``
    broadcast over the batch and silently nulled every row."""
    cfg = GeneratorConfig(style="ar", vocab_size=16, max_grid=GRID, dim=32, depth=1, num_heads=2, cond="text",
                          text_dim=8, max_text_len=MAX_LEN)  # fmt: skip
    emb = Generator(cfg).cond_emb
    text = torch.randn(2, MAX_LEN, 8)
    ok = torch.ones(2, MAX_LEN, dtype=torch.bool)
    emb(Condition(text=text, text_mask=ok, drop=torch.tensor([False, True])))  # well formed: accepted
    bad = {
        "text_mask must be a \\(2, 24\\) bool tensor": Condition(text=text, text_mask=ok.long()),
        "text_mask must be a \\(2, 24\\) bool": Condition(text=text, text_mask=ok.float()),
        "text_mask must be a \\(2, 24\\) bool tensor, got torch.bool \\(2, 5\\)": Condition(
            text=text, text_mask=ok[:, :5]
        ),
        "text features must be \\(2, 24, 8\\)": Condition(text=torch.randn(2, MAX_LEN, 7)),
        "drop must be a \\(2,\\) bool tensor": Condition(text=text, drop=torch.tensor([True])),
        "drop must be a \\(2,\\) bool tensor, got torch.int64": Condition(text=text, drop=torch.tensor([0, 1])),
        "batch dimension": Condition(labels=torch.tensor(3)),
    }
    for message, cond in bad.items():
        with pytest.raises(ValueError, match=message):
            emb(cond)


def test_forward_refuses_a_non_boolean_attention_mask():
    """A 0/1 float mask (``torch.ones(N, N).tril()``) was added to the attention scores as a bias, so nothing was
    masked and a causal model saw the future."""
    cfg = GeneratorConfig(style="ar", vocab_size=16, max_grid=GRID, dim=32, depth=1, num_heads=2, cond="class",
                          num_classes=3)  # fmt: skip
    m = Generator(cfg).eval()
    layout = make_layout(list(GRID), "token")  # a list grid: to_sequence compared it with a tuple
    ids = torch.randint(0, 16, (1, *GRID))
    seq = layout.to_sequence(ids)
    n = seq.shape[1]
    cond = Condition(labels=torch.tensor([1]))
    assert m(seq, cond, coords=layout.coords, mask=torch.ones(n, n, dtype=torch.bool).tril()).shape == (1, n, 16)
    for mask in (torch.ones(n, n).tril(), torch.ones(n, n, dtype=torch.long).tril()):
        with pytest.raises(ValueError, match="mask must be a bool tensor"):
            m(seq, cond, coords=layout.coords, mask=mask)
