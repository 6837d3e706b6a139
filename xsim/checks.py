"""Input checking at the public boundary: one small set of helpers that name the parameter,
the value and what was expected.

Every user-facing function checks its inputs with these before any heavy work starts. They raise
``XsimInputError`` (a ``ValueError``), never use ``assert`` (which ``python -O`` removes).
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np


class XsimInputError(ValueError):
    """Bad input given to xsim: the message names the parameter, the value and what was expected."""


def _where(source: str | None) -> str:
    return f" (in {source})" if source else ""


def check_type(name: str, value: Any, expected: type | tuple[type, ...], source: str | None = None) -> Any:
    """Raise unless ``value`` is an instance of ``expected``."""
    if not isinstance(value, expected):
        names = (
            " or ".join(t.__name__ for t in expected) if isinstance(expected, tuple) else expected.__name__
        )
        raise XsimInputError(
            f"{name} must be {names}, got {type(value).__name__} {value!r}{_where(source)}"
        )
    return value


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    unit: str = "",
    source: str | None = None,
) -> Any:
    """Raise unless every element of ``value`` is finite and lies within [low, high].

    Works for scalars and arrays; the message reports the first offending value.
    """
    arr = np.asarray(value, dtype=float)
    u = f" {unit}" if unit else ""
    if arr.size == 0:
        raise XsimInputError(f"{name} is empty{_where(source)}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise XsimInputError(f"{name} must be finite, got {arr[bad].flat[0]!r}{_where(source)}")
    lo_txt = "" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
    hi_txt = "" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
    expect = f"{lo_txt or '(-inf'}, {hi_txt or 'inf)'}{u}"
    if low is not None:
        below = arr < low if low_inclusive else arr <= low
        if below.any():
            raise XsimInputError(
                f"{name} must lie in {expect}, got {arr[below].flat[0]:g}{u}{_where(source)}"
            )
    if high is not None:
        above = arr > high if high_inclusive else arr >= high
        if above.any():
            raise XsimInputError(
                f"{name} must lie in {expect}, got {arr[above].flat[0]:g}{u}{_where(source)}"
            )
    return value


def check_positive(name: str, value: Any, unit: str = "", source: str | None = None) -> Any:
    """Raise unless every element of ``value`` is finite and > 0."""
    return check_range(name, value, 0.0, None, low_inclusive=False, unit=unit, source=source)


def check_choice(name: str, value: Any, choices: Iterable[Any], source: str | None = None) -> Any:
    """Raise unless ``value`` is one of ``choices``; suggests close matches for strings."""
    options = list(choices)
    if value in options:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(c) for c in options], n=3, cutoff=0.5)
        if close:
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?"
    shown = ", ".join(repr(c) for c in options[:20]) + (", ..." if len(options) > 20 else "")
    raise XsimInputError(f"{name} must be one of {shown}; got {value!r}{hint}{_where(source)}")


def check_close(name: str, value: float, target: float, rel_tol: float, source: str | None = None) -> float:
    """Raise unless ``value`` equals ``target`` within the relative tolerance ``rel_tol``."""
    if not math.isclose(value, target, rel_tol=rel_tol):
        raise XsimInputError(
            f"{name} must be {target:g} (within {rel_tol:g} relative), got {value:.6g}{_where(source)}"
        )
    return value
