"""Page choices kept in the URL's query parameters, so a reload or a shared link reopens them.

A page lists its choices as :class:`Param` (widget key, query parameter, kind, default and the
values allowed), calls :func:`seed` before drawing the widgets (the URL fills those the session
has not set yet; a value that does not parse, or is not allowed, is ignored with a warning naming
it) and :func:`write` after (the values not at their default go back into the URL).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import streamlit as st

KINDS = ("str", "int", "float", "date", "list", "int_list")


@dataclass(frozen=True)
class Param:
    """One choice of a page kept in the URL.

    ``choices``: the values allowed (None: any), or a mapping URL text -> widget value when the
    widget's values are not nice in a URL (``{"1h": "1 hour"}``).
    """

    key: str
    name: str
    kind: str = "str"
    default: Any = None
    choices: Sequence[Any] | Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Param {self.name}: kind {self.kind!r} is not one of {KINDS}")


def parse(kind: str, raw: str) -> Any:
    """A query parameter's text as a widget value (ValueError when malformed)."""
    if kind == "list":
        return [v for v in raw.split(",") if v]
    if kind == "int_list":
        return [int(v) for v in raw.split(",") if v]
    if kind == "float":
        return float(raw)
    if kind == "int":
        return max(1, int(raw))
    if kind == "date":
        return date.fromisoformat(raw)
    return raw


def format_value(kind: str, value: Any) -> str:
    """A widget value as query parameter text."""
    if kind in ("list", "int_list"):
        return ",".join(str(v) for v in value)
    if kind == "date":
        return value.isoformat()
    if kind == "float":
        return f"{float(value):g}"
    return str(value)


def _allowed(p: Param, value: Any) -> tuple[Any, list[Any]]:
    """``value`` keeping only the allowed values, and the refused ones."""
    if p.choices is None:
        return value, []
    if isinstance(p.choices, Mapping):
        known = p.choices
        if p.kind in ("list", "int_list"):
            return [known[v] for v in value if v in known], [v for v in value if v not in known]
        return (known[value], []) if value in known else (p.default, [value])
    if p.kind in ("list", "int_list"):
        return [v for v in value if v in p.choices], [v for v in value if v not in p.choices]
    return (value, []) if value in p.choices else (p.default, [value])


def seed(params: Iterable[Param]) -> None:
    """Fill the widgets the session has not set yet from the URL (or their default)."""
    qp = st.query_params
    for p in params:
        if p.key in st.session_state:
            continue
        value = p.default
        if p.name in qp:
            raw = qp[p.name]
            try:
                value, refused = _allowed(p, parse(p.kind, raw))
            except ValueError:
                st.warning(f"Ignored URL parameter {p.name}={raw!r}: not a valid {p.kind}.")
            else:
                if refused:
                    shown = ", ".join(map(str, refused))
                    st.warning(
                        f"Ignored URL parameter {p.name}={raw!r}: {shown} is not one of "
                        f"{', '.join(map(str, _names(p)))}."
                    )
        st.session_state[p.key] = value


def _names(p: Param) -> list[Any]:
    """The values a URL may name for ``p``."""
    return list(p.choices or [])


def to_text(p: Param, value: Any) -> str:
    """The URL text of a widget value (a mapping's key where ``choices`` is one)."""
    if isinstance(p.choices, Mapping):
        back = {v: k for k, v in p.choices.items()}
        value = [back.get(v, v) for v in value] if isinstance(value, list) else back.get(value)
    return format_value(p.kind, value)


def write(params: Iterable[Param], extra: Mapping[str, str] | None = None) -> None:
    """Put the widgets' values that are not at their default (and ``extra``) in the URL."""
    out: dict[str, str] = {}
    for p in params:
        value = st.session_state.get(p.key)
        if value is None or value == p.default or value == []:
            continue
        out[p.name] = to_text(p, value)
    out.update(extra or {})
    if dict(st.query_params) != out:
        st.query_params.from_dict(out)
