"""fsspec loader: expand paths and globs (local or ``s3://``) and read raw log records.

A file holds a JSON array of records, JSON lines (one record per line, as Azure's blob export
writes), or a wrapper object: ``{"records": [...]}`` (Azure Event Hub export) or the Duo
Admin API response ``{"response": {"authlogs": [...]}}``. The result is the raw frame of
``schema.frame_from_records``: ``_raw`` (record dict), ``_file``, ``_index``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import fsspec
import pandas as pd

from secml.dfp.schema import SchemaError, check_source, frame_from_records
from secml.settings import Settings, get_settings

log = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


class LoaderError(ValueError):
    """A path matched nothing or a file could not be parsed; the message names it."""


def storage_options(url: str, settings: Settings | None = None) -> dict[str, Any]:
    """fsspec options for ``url``: S3 endpoint and credentials from settings for ``s3://``."""
    if not url.startswith(("s3://", "s3a://")):
        return {}
    s = settings or get_settings()
    opts: dict[str, Any] = {}
    if s.s3_endpoint_url:
        opts["client_kwargs"] = {"endpoint_url": s.s3_endpoint_url}
    if s.aws_access_key_id:
        opts["key"] = s.aws_access_key_id
    if s.aws_secret_access_key is not None:
        opts["secret"] = s.aws_secret_access_key.get_secret_value()
    return opts


def expand_paths(
    patterns: str | Sequence[str], settings: Settings | None = None, *, allow_empty: bool = False
) -> list[str]:
    """Expand paths and globs into sorted, de-duplicated file URLs (protocol kept)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        fs, _, _ = fsspec.get_fs_token_paths(
            pattern, storage_options=storage_options(pattern, settings)
        )
        if any(c in pattern for c in _GLOB_CHARS):
            matches = [p for p in fs.glob(pattern) if fs.isfile(p)]
        else:
            matches = [pattern] if fs.isfile(pattern) else []
        if not matches and not allow_empty:
            raise LoaderError(f"no files match {pattern!r}")
        proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        for m in matches:
            url = m if "://" in m or proto in ("file", "local") else f"{proto}://{m}"
            found.append(url)
    return sorted(dict.fromkeys(found))


def parse_records(text: str, file: str) -> list[Any]:
    """Records in a file's text: JSON array, wrapper object or JSON lines."""
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped[0] in "[{":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped[0] == "[":
                raise LoaderError(f"{file} line {exc.lineno}: invalid JSON ({exc.msg})") from None
            return _json_lines(text, file)
        if isinstance(doc, list):
            return doc
        if isinstance(doc, dict):
            if isinstance(doc.get("records"), list):
                return doc["records"]
            resp = doc.get("response")
            if isinstance(resp, dict) and isinstance(resp.get("authlogs"), list):
                return resp["authlogs"]
            if isinstance(resp, list):
                return resp
            return [doc]
    return _json_lines(text, file)


def _json_lines(text: str, file: str) -> list[Any]:
    """Parse JSON lines; blank lines are skipped, a bad line is named."""
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise LoaderError(f"{file} line {n}: invalid JSON ({exc.msg})") from None
    return out


def read_file(url: str, settings: Settings | None = None) -> list[Any]:
    """Read one file's records through fsspec (local, ``s3://``, ``memory://``)."""
    try:
        with fsspec.open(url, "rt", encoding="utf-8", **storage_options(url, settings)) as fh:
            text = fh.read()
    except FileNotFoundError:
        raise LoaderError(f"{url}: file not found") from None
    except UnicodeDecodeError as exc:
        raise LoaderError(f"{url}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_records(text, url)


def load_records(
    paths: str | Iterable[str], source: str, settings: Settings | None = None
) -> pd.DataFrame:
    """Read every file matched by ``paths`` into the raw frame (``_raw``, ``_file``, ``_index``)."""
    check_source(source)
    urls = expand_paths(list([paths] if isinstance(paths, str) else paths), settings)
    frames = []
    for url in urls:
        records = read_file(url, settings)
        try:
            frames.append(frame_from_records(records, file=url))
        except SchemaError as exc:
            raise LoaderError(str(exc)) from None
        log.debug("loaded %d records from %s", len(records), url)
    if not frames:
        return frame_from_records([])
    out = pd.concat(frames, ignore_index=True)
    log.info("loaded %d %s records from %d files", len(out), source, len(urls))
    return out
