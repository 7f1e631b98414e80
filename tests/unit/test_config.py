"""Config loading: defaults < YAML < dotted overrides, with typos and wrong types rejected."""

from dataclasses import dataclass, field, replace

import pytest
import yaml

from core.config import build_config, from_dict, load_yaml, parse_override, save_config, to_dict


@dataclass(frozen=True, kw_only=True)
class Inner:
    depth: int = 2
    widths: tuple[int, ...] = (1, 2)
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class Outer:
    lr: float = 1e-3
    use_ema: bool = False
    model: Inner = field(default_factory=Inner)


def test_yaml_then_overrides_win(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("lr: 0.5\nmodel:\n  depth: 4\n  widths: [3, 4, 5]\n")
    cfg = build_config(Outer, [f], ["model.depth=8", "use_ema=true", "model.name=big"])
    assert cfg == Outer(lr=0.5, use_ema=True, model=Inner(depth=8, widths=(3, 4, 5), name="big"))


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.dpeth=3", r"unknown key\(s\) \['dpeth'\]"),
        ("lrr=0.1", r"unknown key\(s\) \['lrr'\]"),
        ("model.depth=abc", "expected an integer"),
        ("use_ema=1", "expected true/false"),
        ("model.widths=5", "expected a list"),
        ("model=3", "expected a mapping"),
        ("novalue", "key.sub=value"),
        ("lr=1e-4x", "expected a number"),
        ("model.widths=[1, 2", "not valid YAML"),  # a ValueError (one CLI line), not yaml's own error
        ("lr=.nan", "finite number"),  # NaN passes every `lr < 0` check a config makes
        ("lr=-.inf", "finite number"),
        ("lr=1e999", "finite number"),
        ("model={depth: 2, depth: 3}", "duplicate key 'depth'"),
        ("model.name={dpeth: 3}", "does not match"),
        ("model.name=/data/cache #v2", "starts a YAML comment"),  # trained on /data/cache, silently
    ],
)
def test_typos_and_wrong_types_fail(override, match):
    with pytest.raises(ValueError, match=match):
        build_config(Outer, [], [override])


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-4`` as a string; the CLIs' example ``optim.lr=1e-4`` must work, in files too."""
    assert build_config(Outer, [], ["lr=1e-4"]).lr == 1e-4
    assert build_config(Outer, [], ["lr=-2.5E+3"]).lr == -2500.0
    f = tmp_path / "a.yaml"
    f.write_text("lr: 3e-4\n")
    assert build_config(Outer, [f]).lr == 3e-4
    with pytest.raises(ValueError, match="expected an integer"):
        build_config(Outer, [], ["model.depth=1e3"])  # only float fields read exponents


def test_a_quoted_hash_inside_a_list_is_not_a_comment():
    """``train_tokenizer.py --data "/runs/a #b/m.jsonl"`` became ``data.paths=["/runs/a #b/m.jsonl"]``, which the
    comment check refused (it spared only values starting with a quote), so train_shapes.sh failed for RUN='x #2'."""
    assert build_config(Outer, [], ["model.widths=[1, 2]", 'model.name="/runs/a #b"']).model.name == "/runs/a #b"
    assert parse_override('paths=["/runs/a #b/m.jsonl", "c"]') == {"paths": ["/runs/a #b/m.jsonl", "c"]}
    assert parse_override("name=a#b") == {"name": "a#b"}  # no space: part of the word, as YAML reads it
    for cut in ("model.widths=[1, 2] # 3", "model.name='x' #y", "model.name=#x"):
        with pytest.raises(ValueError, match="starts a YAML comment"):
            build_config(Outer, [], [cut])


def test_signed_floats_without_a_leading_digit_are_numbers():
    """``-.5`` and ``+.1`` were strings ("expected a number") while ``.5`` was a number."""
    assert build_config(Outer, [], ["lr=-.5"]).lr == -0.5
    assert build_config(Outer, [], ["lr=+.25e-1"]).lr == 0.025


def test_a_sections_own_check_names_the_section():
    """A ValueError from a nested section's ``__post_init__`` did not say which section: the README's training
    command without ``data.text_encoder.path`` said only "path must be a non-empty directory path, got ''"."""

    @dataclass(frozen=True, kw_only=True)
    class Checked:
        path: str = ""

        def __post_init__(self):
            if not self.path:
                raise ValueError(f"path must be a non-empty directory path, got {self.path!r}")

    @dataclass(frozen=True, kw_only=True)
    class Top:
        encoder: Checked = field(default_factory=lambda: Checked(path="x"))

    with pytest.raises(ValueError, match=r"^config\.encoder: path must be a non-empty"):
        build_config(Top, [], ["encoder.path="])


def test_round_trip_through_yaml(tmp_path):
    cfg = Outer(lr=0.25, model=Inner(depth=3, widths=(7,)))
    save_config(cfg, tmp_path / "c.yaml")
    assert from_dict(Outer, yaml.safe_load((tmp_path / "c.yaml").read_text())) == cfg
    assert to_dict(cfg)["model"]["widths"] == [7]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_saved_string_that_reads_as_a_number_comes_back_a_string(tmp_path):
    """PyYAML's float pattern has no sign-then-dot form, so "+.5e+3" was written plain, read back by the config
    loader as 500.0 and refused ("expected a string"): a run's own train_config.yaml could not be reused."""
    from dataclasses import replace

    from videotrain.generator_task import GeneratorTrainConfig

    for text in ("+.5e+3", "-.5", "+.5", "1.", "0x1f", "+3", "1_000", ".inf", "-.inf", ".nan", "7"):
        cfg = replace(GeneratorTrainConfig(), data=replace(GeneratorTrainConfig().data, cache=text))
        save_config(cfg, tmp_path / "train_config.yaml")
        assert build_config(GeneratorTrainConfig, [tmp_path / "train_config.yaml"]).data.cache == text


def test_an_int_in_a_float_field_is_saved_as_a_float(tmp_path):
    """lr=1 given in Python was saved as "lr: 1", loaded back as 1.0 and saved again as "lr: 1.0": the same config
    written twice had other bytes (and another folder fingerprint). Ints stay ints where the field takes them."""

    @dataclass(frozen=True, kw_only=True)
    class Mixed:
        lr: float = 1
        steps: int = 3
        scale: float | None = 2
        either: int | float = 5
        betas: tuple[float, float] = (0, 1)
        widths: tuple[float, ...] = (1, 2)

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    save_config(Mixed(), first)
    save_config(build_config(Mixed, [first]), second)
    assert first.read_bytes() == second.read_bytes()
    assert yaml.safe_load(first.read_text()) == {
        "lr": 1.0, "steps": 3, "scale": 2.0, "either": 5, "betas": [0.0, 1.0], "widths": [1.0, 2.0]
    }  # fmt: skip
    assert type(yaml.safe_load(first.read_text())["lr"]) is float


def test_missing_or_non_mapping_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_config(Outer, [tmp_path / "missing.yaml"])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        build_config(Outer, [tmp_path / "list.yaml"])


def test_a_key_given_twice_in_a_file_is_refused(tmp_path):
    """PyYAML keeps the last of two equal keys: the whole first `run:` section was dropped without a word."""
    f = tmp_path / "dup.yaml"
    f.write_text("lr: 0.5\nmodel: {depth: 5}\nmodel: {name: x}\n")
    with pytest.raises(ValueError, match=r"dup.yaml.*duplicate key 'model' at line 3"):
        build_config(Outer, [f])


def test_yaml_merge_keys_still_work_and_may_be_overridden(tmp_path):
    f = tmp_path / "merge.yaml"
    f.write_text("base: &b {depth: 3, name: x}\nmodel:\n  <<: *b\n  depth: 5\n")
    assert load_yaml(f)["model"] == {"depth": 5, "name": "x"}  # an explicit key overrides a merged one
    (tmp_path / "list_key.yaml").write_text("? [a, b]\n: 1\n")
    with pytest.raises(ValueError, match="not valid YAML"):  # PyYAML's own refusal, not a TypeError
        load_yaml(tmp_path / "list_key.yaml")


def test_keys_that_are_not_strings_get_the_unknown_key_message(tmp_path):
    f = tmp_path / "mixed.yaml"
    f.write_text("model:\n  1: 2\n  dpeth: 3\n")  # int and str keys together could not be sorted: a TypeError
    with pytest.raises(ValueError, match=r"unknown key\(s\) \[1, 'dpeth'\]"):
        build_config(Outer, [f])


@dataclass(frozen=True, kw_only=True)
class MaybeInner:
    inner: Inner | None = None


def test_a_typo_inside_an_optional_section_names_the_key():
    """A ``X | None`` field said only "does not match Inner | None", not which key was wrong."""
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['dpeth'\]"):
        build_config(MaybeInner, [], ["inner.dpeth=3"])


@dataclass(frozen=True, kw_only=True)
class Fixed:
    grid: tuple[int, int, int] = (1, 2, 3)
    pair: tuple[float, float] = (0.9, 0.99)


def test_fixed_length_tuples():
    assert build_config(Fixed, [], ["grid=[4, 5, 6]", "pair=[0.5, 1]"]) == Fixed(grid=(4, 5, 6), pair=(0.5, 1.0))
    with pytest.raises(ValueError, match="expected 3 items"):
        build_config(Fixed, [], ["grid=[1, 2]"])
    with pytest.raises(ValueError, match=r"grid\[1\]: expected an integer"):
        build_config(Fixed, [], ["grid=[1, x, 2]"])


def test_renamed_training_keys_are_refused_naming_the_new_key(tmp_path):
    """Old ``train.*`` / ``data.micro_batch`` / ``optim.disc_*`` keys name their ``run.*`` / ``disc_optim.*`` heirs."""
    from videotrain.generator_task import GeneratorTrainConfig
    from videotrain.tokenizer_config import TokenizerTrainConfig

    cases = [
        (TokenizerTrainConfig, "train.save_every=5", "'train.save_every' was renamed to 'run.checkpoint_every'"),
        (TokenizerTrainConfig, "train.batch_size=2", "'train.batch_size' was renamed to 'run.micro_batch'"),
        (TokenizerTrainConfig, "train.steps=3", "'train.steps' was renamed to 'run.steps'"),
        (TokenizerTrainConfig, "optim.disc_lr=0.1", "'optim.disc_lr' was renamed to 'disc_optim.lr'"),
        (GeneratorTrainConfig, "data.micro_batch=4", "'data.micro_batch' was renamed to 'run.micro_batch'"),
    ]
    for cls, override, message in cases:
        with pytest.raises(ValueError, match=message):
            build_config(cls, overrides=[override])
    old_yaml = tmp_path / "old.yaml"
    old_yaml.write_text("train:\n  preview_every: 10\n")
    with pytest.raises(ValueError, match="'train.preview_every' was renamed to 'run.sample_every'"):
        build_config(TokenizerTrainConfig, [old_yaml])
    assert build_config(TokenizerTrainConfig, overrides=["run.checkpoint_every=5"]).run.checkpoint_every == 5
    # a generator config has no discriminator: "renamed to 'disc_optim.lr'" sent the user to a key that fails too
    with pytest.raises(ValueError, match=r"config.optim: unknown key\(s\) \['disc_lr'\]"):
        build_config(GeneratorTrainConfig, overrides=["optim.disc_lr=0.1"])


def test_a_task_refuses_run_fields_it_cannot_honour():
    from videotrain.config import RunConfig, check_supported

    check_supported(RunConfig(), ("eval_every",), "tokenizer")  # defaults pass
    with pytest.raises(ValueError, match="run.eval_every is not supported by the tokenizer trainer"):
        check_supported(RunConfig(eval_every=10), ("eval_every",), "tokenizer")


def test_a_section_given_in_part_keeps_the_rest_of_the_fields_own_default():
    """A YAML ``optim: {lr: ...}`` for a tokenizer rebuilt the section from OptimConfig's class defaults, so the
    tokenizer's own betas (0.9, 0.99) and zero weight decay silently became (0.9, 0.95) and 0.05; the same for its
    discriminator's constant schedule and its run defaults."""
    from videotrain.tokenizer_config import TokenizerTrainConfig

    default = build_config(TokenizerTrainConfig, [], [])
    cfg = build_config(TokenizerTrainConfig, [], ["optim.lr=0.002", "disc_optim.lr=0.0001", "run.steps=7"])
    assert cfg.optim == replace(default.optim, lr=0.002)
    assert cfg.disc_optim == replace(default.disc_optim, lr=0.0001)
    assert cfg.run == replace(default.run, steps=7)
    assert (cfg.optim.betas, cfg.optim.weight_decay, cfg.disc_optim.schedule) == ((0.9, 0.99), 0.0, "constant")


@pytest.mark.parametrize("raw", ["010", "02000", "1:30", "1:30.5", "0b101"])
def test_yaml_11_octal_and_base_60_numbers_are_refused_not_converted(tmp_path, raw):
    """PyYAML reads 010 as 8, 02000 as 1024 and 1:30 as 90: a seed, a step count or a time limit changed silently."""
    with pytest.raises(ValueError, match=r"model\.depth: expected an integer, got '"):
        build_config(Outer, overrides=[f"model.depth={raw}"])
    with pytest.raises(ValueError, match="lr: expected a number"):
        build_config(Outer, overrides=[f"lr={raw}"])
    (tmp_path / "a.yaml").write_text(f"model:\n  depth: {raw}\n")
    with pytest.raises(ValueError, match=r"model\.depth: expected an integer"):
        build_config(Outer, [tmp_path / "a.yaml"])
    ok = build_config(Outer, overrides=["model.depth=10", "lr=1_000", "model.widths=[0x10, -3, +4]"])
    assert ok.model.depth == 10 and ok.lr == 1000.0 and ok.model.widths == (16, -3, 4)


def test_hostile_or_deep_yaml_is_one_short_value_error(tmp_path):
    """An alias bomb of 350 bytes printed its expanded value in the message (52 MB, 15 s); 2,000 nested brackets were
    a RecursionError and an int of 400 digits in a float field an OverflowError, tracebacks in a CLI."""
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefg"):
        prev = "abcdefg"[i]
        bomb.append(f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    bomb.append("lr: *g")
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    (tmp_path / "deep.yaml").write_text("lr: " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(ValueError) as err:
        build_config(Outer, [tmp_path / "bomb.yaml"])
    assert len(str(err.value)) < 500
    with pytest.raises(ValueError, match="nested too deeply"):
        build_config(Outer, [tmp_path / "deep.yaml"])
    with pytest.raises(ValueError, match="nested too deeply"):
        build_config(Outer, overrides=["lr=" + "[" * 2000 + "]" * 2000])
    with pytest.raises(ValueError, match="lr: expected a finite number"):
        build_config(Outer, overrides=["lr=1" + "0" * 400])


def test_a_second_merge_key_in_one_mapping_is_refused(tmp_path):
    """Both `<<` keys were skipped by the duplicate check, and one merged section silently won."""
    (tmp_path / "a.yaml").write_text("x: &x {lr: 0.1}\ny: &y {lr: 0.2}\nz:\n  <<: *x\n  <<: *y\n")
    with pytest.raises(ValueError, match="a second '<<' merge key at line 5"):
        load_yaml(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("x: &x {lr: 0.1}\ny: &y {use_ema: true}\nz:\n  <<: [*x, *y]\n")
    assert load_yaml(tmp_path / "b.yaml")["z"] == {"lr": 0.1, "use_ema": True}
