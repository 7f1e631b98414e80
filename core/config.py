"""Frozen dataclass configs merged from defaults, YAML files and dotted CLI overrides.

Every module defines ``@dataclass(frozen=True, kw_only=True) class Config``. This module
turns plain mappings (from YAML) and ``key.sub=value`` strings into those dataclasses,
type-checking every field and rejecting unknown keys, so a typo fails loudly instead of
being silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from core.files import atomic_write_text

T = TypeVar("T")

# YAML 1.1 (PyYAML) reads a number in exponent form without a dot, such as 1e-4, as a string; YAML 1.2 and
# Python read it as a float. A float field takes it as a number.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
# YAML 1.1 numbers that YAML 1.2 and Python read otherwise, left as strings so that a number field refuses them:
# a leading zero was octal (seed 010 gave 8, steps 02000 gave 1024) and a:b base 60 (max_minutes 1:30 gave 90).
_DECIMAL_INT = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$")
_DECIMAL_FLOAT = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|[-+]?\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_shown = reprlib.Repr()  # keyword arguments only from Python 3.12
_shown.maxstring = _shown.maxother = 80
_shown.maxlist = _shown.maxtuple = _shown.maxdict = 6
_shown.maxlevel = 3


def _show(value: Any) -> str:
    """A bounded repr for messages: an aliased YAML value expanded in full was millions of characters."""
    return _shown.repr(value)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice (PyYAML keeps the last one silently), a second
    ``<<`` merge in one mapping, and YAML 1.1's octal and base-60 numbers (they stay strings)."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        merges = 0
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                merges += 1
                if merges > 1:  # one of the two merged sections won silently
                    line = key_node.start_mark.line + 1
                    raise ValueError(f"a second '<<' merge key at line {line}: merge a list of anchors in one instead")
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue  # the safe loader itself refuses it, with its own message
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ValueError(f"duplicate key {key!r} at line {line}: each key may appear once in a mapping")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(_INT, _DECIMAL_INT, list("-+0123456789"))
_UniqueKeyLoader.add_implicit_resolver(_FLOAT, _DECIMAL_FLOAT, list("-+0123456789."))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and converts lists to tuples."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = {}
        for arm in get_args(tp):
            try:
                return _coerce(value, arm, where)
            except ValueError as err:
                errors[arm] = err
        # a mapping meant for the dataclass arm (of ``X | None``): its own error says which key is wrong
        for arm, err in errors.items():
            if dataclasses.is_dataclass(arm) and isinstance(value, dict):
                raise err
        raise ValueError(f"{where}: {_show(value)} does not match {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ValueError(f"{where}: expected null, got {_show(value)}")
    if origin is typing.Literal:
        if value in get_args(tp):
            return value
        raise ValueError(f"{where}: {_show(value)} is not one of {list(get_args(tp))}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {_show(value)}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {_show(value)}")
        k_tp, v_tp = get_args(tp)
        return {_coerce(k, k_tp, where): _coerce(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {_show(value)}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true/false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)  # an int of 400 digits: OverflowError
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):  # NaN passes every `x < 0` check a config makes
                raise ValueError(f"{where}: expected a finite number, got {_show(value)}")
            return number
        raise ValueError(f"{where}: expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {_show(value)}")
    raise ValueError(f"{where}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Builds the dataclass ``cls`` from a mapping; unknown keys and bad types raise ValueError."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names, key=str)  # keys may be ints or bools in YAML
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys are {sorted(names)}")
    defaults = {f.name: _default_of(f) for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for k, v in data.items():
        if isinstance(v, dict) and dataclasses.is_dataclass(defaults[k]):
            # A section given in part keeps the rest of the field's own default (a default_factory's values),
            # not the section class's: a YAML setting optim.lr once reset a tokenizer's betas and weight decay.
            v = _deep_merge(to_dict(defaults[k]), v)
        kwargs[k] = _coerce(v, hints[k], f"{where}.{k}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # a required field is missing, or a check of the section's own refused it
        raise ValueError(f"{where}: {err}") from None


def _default_of(f: dataclasses.Field) -> Any:
    """A field's default value (made by its factory), or None when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Converts a (nested) config dataclass to plain YAML-safe Python data."""

    def plain(v: Any, tp: Any = Any) -> Any:
        if dataclasses.is_dataclass(v):
            hints = get_type_hints(type(v))
            return {f.name: plain(getattr(v, f.name), hints.get(f.name, Any)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            args = get_args(tp) if get_origin(tp) is tuple else ()
            arms = [args[0]] * len(v) if len(args) == 2 and args[1] is Ellipsis else list(args)
            return [plain(x, arms[i] if i < len(arms) else Any) for i, x in enumerate(v)]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if type(v) is int and _float_not_int(tp):
            # 1 in a float field was saved as "1": loaded back as 1.0, saved again as "1.0", other bytes
            return float(v)
        return v

    return plain(cfg)


def _float_not_int(tp: Any) -> bool:
    """Whether the annotation takes a float and no int (``float``, ``float | None``; not ``int | float``)."""
    arms = get_args(tp) if get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return float in arms and int not in arms


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _has_comment(raw: str) -> bool:
    """Whether YAML reads part of ``raw`` as a comment: a ``#`` outside every token (``/data/cache #v2`` is the
    path ``/data/cache``); a ``#`` inside a quoted item (``["/data/run #2/a.jsonl"]``) or a word (``a#b``) is not."""
    try:
        tokens = list(yaml.scan(raw, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return False  # the parse reports it
    pos = 0
    for token in tokens:
        if "#" in raw[pos : token.start_mark.index]:
            return True
        pos = max(pos, token.end_mark.index)
    return "#" in raw[pos:]


def parse_override(item: str) -> dict[str, Any]:
    """Turns ``"model.depth=8"`` into ``{"model": {"depth": 8}}``; the value is parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form key.sub=value")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {item!r} has an empty key")
    if _has_comment(raw):  # YAML drops the rest
        raise ValueError(f"override {item!r}: ' #' starts a YAML comment, which would cut the value short; quote it "
                         f"in YAML, e.g. {key}='\"...\"'")  # fmt: skip
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""
    except ValueError as err:
        raise ValueError(f"override {item!r}: {err}") from None
    except RecursionError:
        raise ValueError(f"override {key!r}: the value is nested too deeply") from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "cannot be parsed"
        raise ValueError(f"override {item!r}: the value is not valid YAML ({problem})") from None
    node: dict[str, Any] = {}
    cur = node
    parts = key.split(".")
    for part in parts[:-1]:
        cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value
    return node


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a YAML mapping with PyYAML's safe loader; an empty file is an empty mapping. A key given twice in
    one mapping is a ValueError (the safe loader alone keeps the last silently)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} " + ("is a folder" if path.is_dir() else "does not exist"))
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except ValueError as err:
        raise ValueError(f"config file {str(path)!r}: {err}") from None
    except RecursionError:
        raise ValueError(f"config file {str(path)!r} is nested too deeply") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def build_config(
    cls: type[T],
    files: typing.Sequence[str | os.PathLike] = (),
    overrides: typing.Sequence[str] = (),
    base: T | None = None,
) -> T:
    """Merges ``base`` (or the defaults), then each YAML file, then dotted overrides.

    Args:
        cls: the config dataclass.
        files: YAML files applied in order.
        overrides: strings like ``"encoder.base_channels=64"``.
        base: a starting config instead of the class defaults.

    Returns:
        The resolved, validated config.
    """
    data: dict[str, Any] = to_dict(base) if base is not None else {}
    for f in files:
        data = _deep_merge(data, load_yaml(f))
    for item in overrides:
        data = _deep_merge(data, parse_override(item))
    _refuse_renamed(data, getattr(cls, "RENAMED", {}))
    return from_dict(cls, data)


def _dotted_keys(data: dict[str, Any], depth: int, prefix: str = "") -> list[str]:
    """Every key of a nested mapping as a dotted path, sections included, down to ``depth`` levels.

    The bound matters: YAML aliases make a mapping that holds itself (``a: &x {b: *x}``, endless recursion) or
    ~600 bytes that expand to millions of keys."""
    keys = []
    for k, v in data.items():
        keys.append(prefix + str(k))
        if isinstance(v, dict) and depth > 1:
            keys += _dotted_keys(v, depth - 1, f"{prefix}{k}.")
    return keys


def _refuse_renamed(data: dict[str, Any], renamed: typing.Mapping[str, str]) -> None:
    """Raises a ValueError naming the new key for the first key in ``data`` that ``renamed`` lists.

    ``renamed`` maps old dotted keys to new ones (a config class's ``RENAMED`` class variable); a
    longer, more specific entry wins over a whole-section one.
    """
    if not renamed:
        return
    depth = max(old.count(".") + 1 for old in renamed)  # no renamed key lies deeper
    for key in sorted(_dotted_keys(data, depth), key=lambda k: -k.count(".")):  # the most specific key first
        hits = [old for old in renamed if key == old or key.startswith(old + ".")]
        if hits:
            old = max(hits, key=len)
            new = renamed[old] + key[len(old) :]
            raise ValueError(f"config key {key!r} was renamed to {new!r}; update the YAML file or override")


class _ConfigDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes a string :class:`_UniqueKeyLoader` would read as a number: PyYAML's own
    float pattern has no ``+.5``, so such a value was written plain and the saved config refused on load."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        if _DECIMAL_INT.match(data) or _DECIMAL_FLOAT.match(data):
            return self.represent_scalar("tag:yaml.org,2002:str", data, style="'")  # as PyYAML quotes '7'
        return super().represent_str(data)


_ConfigDumper.add_representer(str, _ConfigDumper.represent_str)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.dump(to_dict(cfg), Dumper=_ConfigDumper, sort_keys=False))
