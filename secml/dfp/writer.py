"""Write detections as CSV or JSON lines, locally or through fsspec (``s3://``)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Literal

import fsspec
import pandas as pd

from secml.dfp.loader import storage_options

log = logging.getLogger(__name__)

Format = Literal["csv", "jsonl"]


def infer_format(path: str) -> Format:
    """``csv`` for ``.csv``, ``jsonl`` for ``.jsonl``/``.json``/``.ndjson``; else an error."""
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    raise ValueError(f"cannot tell the output format of {path!r}: use .csv or .jsonl")


def _cell(value: Any) -> Any:
    """A JSON-safe cell: NaN -> None, numpy scalars -> Python, timestamps -> ISO strings."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_cell(v) for v in value]
    if isinstance(value, dict):
        return {k: _cell(v) for k, v in value.items()}
    return value


def write_detections(df: pd.DataFrame, path: str, fmt: Format | None = None) -> str:
    """Write ``df`` to ``path`` as CSV (nested cells JSON-encoded) or JSON lines; return path."""
    fmt = fmt or infer_format(path)
    fs, _, (p,) = fsspec.get_fs_token_paths(path, storage_options=storage_options(path))
    parent = p.rsplit("/", 1)[0] if "/" in p else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fsspec.open(path, "w", encoding="utf-8", newline="", **storage_options(path)) as fh:
        if fmt == "csv":
            out = df.copy()
            for col in out.columns:
                if out[col].dtype == object:
                    out[col] = out[col].map(
                        lambda v: json.dumps(_cell(v)) if isinstance(v, (list, dict)) else v
                    )
            out.to_csv(fh, index=False)
        elif fmt == "jsonl":
            cols = list(df.columns)
            for row in df.itertuples(index=False, name=None):
                fh.write(json.dumps({c: _cell(v) for c, v in zip(cols, row, strict=True)}))
                fh.write("\n")
        else:
            raise ValueError(f"unknown output format {fmt!r}; use csv or jsonl")
    log.info("wrote %d detections to %s (%s)", len(df), path, fmt)
    return path
