"""The small readers the model-JSON parsers of both versions share (:mod:`hsbcala.engines.modeljson_v1`, ``_v2``):
a module of its own so that :mod:`hsbcala.engines.modeljson` imports the parsers and they import only this."""

from __future__ import annotations

from typing import Any


class _Unexpressible(Exception):
    """A layer the --network string grammar cannot reproduce."""


class _Bad(Exception):
    """The JSON lacks a key or has a value of the wrong kind (message completes 'model <file> …')."""


def _dig(d: Any, *keys: str | int) -> Any:
    cur = d
    for i, key in enumerate(keys):
        try:
            cur = cur[key]
        except (KeyError, IndexError, TypeError):
            where = ".".join(str(k) for k in keys[: i + 1])
            raise _Bad(f"lacks '{where}'") from None
    return cur


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise _Bad(f"has a non-integer {what}: {value!r}")
    return int(value)


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"has a non-number {what}: {value!r}")
    return float(value)


def _num(x: float) -> str:
    """A rate as written in a network string: 0.5, 0.3 (not 0.30000001192092896 from float32 protobuf)."""
    return format(float(f"{x:.6g}"), "g")


def _charset(chars: Any, where: str) -> tuple[str, ...]:
    if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
        raise _Bad(f"has no list of characters at '{where}'")
    if chars and chars[0] == "":
        chars = chars[1:]  # index 0 is the CTC blank
    return tuple(chars)


def _pair(d: Any, key: str, what: str, default: tuple[int, int] | None = None) -> tuple[int, int]:
    """An ``{x, y}`` object as (x, y); protobuf JSON leaves out zero coordinates."""
    v = d.get(key) if isinstance(d, dict) else None
    if v is None:
        if default is None:
            raise _Bad(f"has a {what} without '{key}'")
        return default
    if not isinstance(v, dict):
        raise _Bad(f"has a {what} whose '{key}' is not an {{x, y}} object: {v!r}")
    return _int(v.get("x", 0), f"{what} {key}.x"), _int(v.get("y", 0), f"{what} {key}.y")


def _xy(p: tuple[int, int]) -> str:
    return f"{p[0]}x{p[1]}"
