"""The ABP batch pipeline's from-file and preprocess stages.

Reads JSON lines (as bytes, so the writer can reuse each raw line) or CSV in blocks, parses JSON
with orjson and reads the 18 features; a row that cannot be read is kept as an error with its
position, so the pipeline can name its line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import orjson

from secml.abp.features import extract

UUID_KEY = "nvidia_smi_log.gpu.uuid"
TIMESTAMP_KEY = "nvidia_smi_log.timestamp"

CSV_SUFFIXES = (".csv", ".csv.gz")


def is_csv(path: str) -> bool:
    """CSV by suffix; everything else is JSON lines."""
    return path.lower().endswith(CSV_SUFFIXES)


@dataclass
class Block:
    """Consecutive rows of one input file, as read (before parsing for JSON lines)."""

    path: str
    first_line: int
    lines: list[bytes]  # JSON text per row: the raw line, or the CSV row encoded
    records: list[dict[str, Any] | Exception] | None = None  # CSV rows (or why unreadable)
    line_nos: list[int] | None = None  # CSV: a row may span lines

    def line_no(self, pos: int) -> int:
        """The 1-based line number of the row at ``pos``."""
        return self.line_nos[pos] if self.line_nos is not None else self.first_line + pos


@dataclass
class Featurized:
    """The 18 features of a block's good rows, and why the others were not read."""

    X: np.ndarray  # (len(kept), 18)
    kept: list[int]  # positions in the block
    errors: list[tuple[int, str]]  # (position, what is wrong)
    special: dict[int, dict[str, Any]]  # index into kept -> row already holding an output key
    uuids: list[str | None] | None = None  # GPU uuid per kept row (per-GPU temporal features)
    times: list[str | None] | None = None  # nvidia-smi timestamp per kept row (alerts)


def parse_line(line: bytes) -> dict[str, Any] | ValueError | None:
    """One JSON line as a dict, the ValueError saying why it is not one, or None when blank."""
    if not line.strip():
        return None
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(rec, dict):
        return ValueError(f"expected a JSON object, got {type(rec).__name__}")
    return rec


def featurize_lines(lines: list[bytes]) -> Featurized:
    """Parse JSON lines and read their features; blank lines are not rows."""
    return featurize_records([parse_line(line) for line in lines])


def featurize_records(records: Sequence[dict[str, Any] | Exception | None]) -> Featurized:
    """Read the features of parsed rows; an Exception is an unreadable row, None no row."""
    kept: list[int] = []
    errors: list[tuple[int, str]] = []
    special: dict[int, dict[str, Any]] = {}
    rows = [(pos, rec) for pos, rec in enumerate(records) if rec is not None]
    for pos, rec in rows:
        if isinstance(rec, Exception):
            errors.append((pos, str(rec)))
    good = [(pos, rec) for pos, rec in rows if not isinstance(rec, Exception)]
    got = extract([rec for _, rec in good])  # column by column, one vectorised featurizer
    bad = {e.index: e.detail for e in got.errors}
    for k, (pos, _) in enumerate(good):
        if k in bad:
            errors.append((pos, bad[k]))
    errors.sort()
    X = got.X[got.ok]
    uuids: list[str | None] = []
    times: list[str | None] = []
    for k, (pos, rec) in enumerate(good):
        if k in bad:
            continue
        if "mining" in rec or "mining_score" in rec:
            special[len(kept)] = rec
        kept.append(pos)
        uuids.append(rec.get(UUID_KEY))
        times.append(rec.get(TIMESTAMP_KEY))
    return Featurized(X[: len(kept)], kept, errors, special, uuids, times)


def read_blocks(files: Sequence[str], rows: int) -> Iterator[Block]:
    """Yield blocks of up to ``rows`` rows from each file (JSON lines as bytes, CSV as dicts)."""
    import fsspec

    for path in files:
        if not is_csv(path):
            with fsspec.open(path, "rb", compression="infer") as fh:
                first = 1
                while lines := list(islice(fh, rows)):
                    yield Block(path, first, lines)
                    first += len(lines)
            continue
        with fsspec.open(path, "rt", encoding="utf-8", newline="", compression="infer") as fh:
            reader = csv.DictReader(fh)
            block = Block(path, 0, [], [], [])
            for row in reader:
                assert block.records is not None and block.line_nos is not None
                rec: dict[str, Any] | Exception = row
                if None in row:
                    n = len(reader.fieldnames or [])
                    rec = ValueError(f"{len(row[None])} more field(s) than the header's {n}")
                block.records.append(rec)
                block.lines.append(b"" if isinstance(rec, Exception) else orjson.dumps(rec))
                block.line_nos.append(reader.line_num)
                if len(block.lines) == rows:
                    yield block
                    block = Block(path, 0, [], [], [])
            if block.lines:
                yield block


def featurized_blocks(blocks: Iterator[Block]) -> Iterator[tuple[Block, Featurized]]:
    """Each block with its features, in input order."""
    for block in blocks:
        if block.records is not None:
            yield block, featurize_records(block.records)
        else:
            yield block, featurize_lines(block.lines)
