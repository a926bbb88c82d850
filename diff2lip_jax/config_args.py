"""The argument of a config file's `get_config(arg)`: a variant plus typed options.

    --config=configs/diff2lip.py:tiny
    --config=configs/diff2lip.py:official,losses=sync

Grammar (what follows the first `:` of the --config value):

    ARG    := [VARIANT] ("," KEY "=" VALUE)*      empty / None: the first variant
    VALUE  := one of the option's choices, or text its type parses (int, float, str,
              bool: true/false/yes/no/1/0)

The variant may stand anywhere among the options but at most once; each key at most
once. An unknown variant or key, a repeated one, or a value its option refuses is a
ValueError naming it and the allowed ones.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


class VariantArg(NamedTuple):
    """A parsed config argument: the variant and the options given (only those given)."""

    variant: str
    options: dict[str, Any]


def parse_variant_arg(
    arg: str | None,
    variants: Sequence[str],
    options: Mapping[str, type | Collection[str]] | None = None,
) -> VariantArg:
    """Parses `VARIANT[,KEY=VALUE...]` against the allowed variants and options.

    Args:
      arg: the text after the `:` of `--config=FILE.py:ARG` (None or "" for the default).
      variants: the allowed variants; the first is the default.
      options: option name -> its type (int, float, str, bool) or its allowed values.

    Returns:
      VariantArg(variant, options given, converted); callers supply defaults with
      `.options.get(key, default)`.
    """
    variants = tuple(variants)
    if not variants:
        raise ValueError("parse_variant_arg: no variants allowed")
    options = dict(options or {})
    text = arg or ""
    variant = None
    values: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" not in part:
            if part not in variants:
                raise ValueError(f"config {text!r}: unknown variant {part!r}; choose one of {variants}")
            if variant is not None:
                raise ValueError(f"config {text!r}: two variants ({variant!r}, {part!r}); give one of {variants}")
            variant = part
            continue
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in options:
            known = ", ".join(options) or "none"
            raise ValueError(f"config {text!r}: unknown option {key!r}; known options: {known}")
        if key in values:
            raise ValueError(f"config {text!r}: option {key!r} given twice")
        values[key] = _convert(text, key, value, options[key])
    return VariantArg(variant if variant is not None else variants[0], values)


def _convert(text: str, key: str, value: str, spec: type | Collection[str]) -> Any:
    if isinstance(spec, type):
        if spec is bool:
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise ValueError(f"config {text!r}: {key}={value!r} is not a valid bool; use one of {_TRUE + _FALSE}")
        try:
            return spec(value)
        except ValueError:
            raise ValueError(f"config {text!r}: {key}={value!r} is not a valid {spec.__name__}") from None
    choices = tuple(spec)
    if value not in choices:
        raise ValueError(f"config {text!r}: unknown {key}={value!r}; choose one of {choices}")
    return value
