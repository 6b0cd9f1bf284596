"""The one reversible mapping between DFP user ids and registered model names.

``user_to_model_name("duo", "Alice.Smith@example.com") == "dfp-duo-_41lice.smith_40example.com"``
and ``model_name_to_user`` gives back ``("duo", "Alice.Smith@example.com")``. The user part
keeps ``a-z``, ``0-9``, ``.`` and ``-``; every other character (upper case, ``@``, ``/``,
``_``, spaces, any unicode) becomes ``_`` plus two lower-case hex digits per UTF-8 byte.
Names are therefore valid MLflow model names (no ``/`` or ``:``), Triton model names and
file names, and distinct users never share a name. The reserved id ``GENERIC_USER`` maps to
``dfp-<source>-generic``, the model of users without one of their own.
"""

from __future__ import annotations

import re

PREFIX = "dfp"
GENERIC_USER = "generic"
SOURCES: tuple[str, ...] = ("duo", "azure")
MAX_NAME_LENGTH = 256
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")
_ESCAPE = re.compile(r"_([0-9a-f]{2})")
_VALID_ENCODED = re.compile(r"(?:[a-z0-9.\-]|_[0-9a-f]{2})+")


class ModelNameError(ValueError):
    """A source, user id or model name that cannot be mapped; the message says why."""


def _check_source(source: str) -> None:
    """Refuse unknown sources (the name would not parse back)."""
    if source not in SOURCES:
        raise ModelNameError(f"unknown DFP source {source!r}; expected one of {SOURCES}")


def encode_user(user: str) -> str:
    """Escape a user id into the safe alphabet ``a-z0-9.-`` plus ``_hh`` escapes (reversible)."""
    if not isinstance(user, str) or user == "":
        raise ModelNameError(f"user id must be a non-empty string, got {user!r}")
    parts = []
    for ch in user:
        if ch in _SAFE:
            parts.append(ch)
        else:
            parts.append("".join(f"_{b:02x}" for b in ch.encode("utf-8")))
    return "".join(parts)


def decode_user(encoded: str) -> str:
    """Inverse of ``encode_user``."""
    if not _VALID_ENCODED.fullmatch(encoded or ""):
        raise ModelNameError(f"{encoded!r} is not an encoded user id")
    out = bytearray()
    i = 0
    while i < len(encoded):
        if encoded[i] == "_":
            out.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(encoded[i].encode("ascii"))
            i += 1
    try:
        user = out.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelNameError(f"{encoded!r} does not decode to UTF-8 text") from None
    if encode_user(user) != encoded:  # one canonical spelling per user
        raise ModelNameError(f"{encoded!r} is not the canonical encoding of {user!r}")
    return user


def user_to_model_name(source: str, user: str) -> str:
    """Registered model name of ``user``'s model (``GENERIC_USER`` -> ``dfp-<source>-generic``)."""
    _check_source(source)
    if user == GENERIC_USER:
        return f"{PREFIX}-{source}-{GENERIC_USER}"
    name = f"{PREFIX}-{source}-{encode_user(user)}"
    if len(name) > MAX_NAME_LENGTH:
        raise ModelNameError(
            f"model name for user {user[:40]!r}... is {len(name)} characters "
            f"(limit {MAX_NAME_LENGTH})"
        )
    return name


def model_name_to_user(name: str) -> tuple[str, str]:
    """(source, user id) of a DFP model name; the generic model gives ``GENERIC_USER``."""
    parts = name.split("-", 2) if isinstance(name, str) else []
    if len(parts) != 3 or parts[0] != PREFIX:
        raise ModelNameError(f"{name!r} is not a DFP model name (dfp-<source>-<user>)")
    _, source, encoded = parts
    _check_source(source)
    if encoded == GENERIC_USER:
        return source, GENERIC_USER
    return source, decode_user(encoded)


def is_generic(name: str) -> bool:
    """Whether ``name`` is a source's generic model."""
    return model_name_to_user(name)[1] == GENERIC_USER
