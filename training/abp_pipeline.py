"""ABP batch pipeline, like Morpheus's ``pipeline-fil``: file -> features -> score -> file.

from-file (JSON lines or CSV; paths or globs, any fsspec URL, ``.gz`` ok) -> preprocess (the 18
features) -> inference (in-process XGBoost, or Triton with ``--triton``) -> add-class
(``mining`` 0/1 and ``mining_score``) -> to-file (JSON lines or CSV, by the output suffix).
A bad row is reported with its file and line number, then skipped or fatal
(``--on-error``); never dropped silently. Ends with a summary: rows, flagged, skipped, rows/s.

    python -m training.abp_pipeline --input 'data/*.jsonlines' --output out.jsonlines
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
import orjson

from secml.abp import MODEL_NAME, PROD_ALIAS
from secml.abp.features import N_FEATURES, FeatureError, parse_record
from secml.abp.model import DEFAULT_THRESHOLD, DataError, expand, load_booster, score

log = logging.getLogger(__name__)

TRITON_MODEL = "abp_nvsmi_xgb"
CSV_SUFFIXES = (".csv", ".csv.gz")
Scorer = Callable[[np.ndarray, list[dict[str, Any]]], np.ndarray]


class PipelineError(RuntimeError):
    """A fatal pipeline error with a message a person can act on."""


@dataclass
class Summary:
    """What one pipeline run did."""

    rows: int = 0
    scored: int = 0
    flagged: int = 0
    skipped: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        """Scored rows per second of wall time."""
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One-line summary."""
        return (
            f"rows={self.rows} scored={self.scored} flagged={self.flagged} "
            f"skipped={self.skipped} seconds={self.seconds:.2f} rows/s={self.rows_per_s:,.0f}"
        )


# ---------------------------------------------------------------- from-file


def _is_csv(path: str) -> bool:
    """CSV by suffix; everything else is JSON lines."""
    return path.lower().endswith(CSV_SUFFIXES)


def read_rows(files: Sequence[str]) -> Iterator[tuple[str, int, Any, bytes | None]]:
    """Yield (file, line number, record or the exception that made it unreadable, raw JSON line).

    JSON lines are read as bytes and parsed with orjson; the raw line comes back so the writer
    can append the two output keys without re-encoding ~175 fields.
    """
    import fsspec

    for path in files:
        if _is_csv(path):
            with fsspec.open(path, "rt", encoding="utf-8", newline="", compression="infer") as fh:
                reader = csv.DictReader(fh)
                for row in reader:
                    if None in row:
                        n = len(reader.fieldnames or [])
                        err = ValueError(f"{len(row[None])} more field(s) than the header's {n}")
                        yield path, reader.line_num, err, None
                        continue
                    yield path, reader.line_num, row, None
            continue
        with fsspec.open(path, "rb", compression="infer") as fh:
            for no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    err = ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})")
                    yield path, no, err, None
                    continue
                if not isinstance(rec, dict):
                    err = ValueError(f"expected a JSON object, got {type(rec).__name__}")
                    yield path, no, err, None
                    continue
                yield path, no, rec, line


# ---------------------------------------------------------------- inference


def local_scorer(model: str) -> tuple[Scorer, str, float | None]:
    """An in-process scorer for a booster file or an MLflow model URI; (scorer, name, threshold)."""
    if Path(model).exists():
        booster = load_booster(model)
        name = str(model)
    elif ":/" not in model:
        raise PipelineError(
            f"model file {model!r} does not exist; pass a booster file or an MLflow URI "
            f"such as models:/{MODEL_NAME}@{PROD_ALIAS}"
        )
    else:
        import mlflow

        from secml.settings import get_settings

        mlflow.set_tracking_uri(get_settings().mlflow_tracking_uri)
        try:
            booster = mlflow.xgboost.load_model(model)
        except Exception as exc:  # noqa: BLE001 - mlflow raises many types; all mean "no model"
            raise PipelineError(
                f"cannot load model {model!r} ({exc}); train one with the abp-train flow "
                "or pass --model PATH to a booster file"
            ) from None
        name = model
    attr = booster.attr("threshold")
    return (lambda X, _records: score(booster, X)), name, float(attr) if attr else None


class TritonScorer:
    """Score records on Triton's ``abp_nvsmi_xgb`` model (raw JSON records in, RESULT JSON out)."""

    def __init__(self, url: str, timeout_s: float, max_batch: int = 4096) -> None:
        """Connect lazily to Triton's HTTP endpoint ``url``."""
        try:
            from serving.triton import TritonClient
        except ImportError as exc:
            raise PipelineError(
                f"--triton needs the serving package's Triton client ({exc}); "
                "run without --triton to score in-process"
            ) from None
        self.max_batch = max_batch
        self._loop = asyncio.new_event_loop()
        self._client = TritonClient(url, timeout_s=timeout_s)
        self.url = url

    def __call__(self, _X: np.ndarray, records: list[dict[str, Any]]) -> np.ndarray:
        """P(mining) for ``records`` from Triton."""
        from serving.triton import TritonError, bytes_column

        out: list[float] = []
        for i in range(0, len(records), self.max_batch):
            part = records[i : i + self.max_batch]
            tensor = bytes_column("RECORDS", [orjson.dumps(r).decode() for r in part])
            try:
                res = self._loop.run_until_complete(
                    self._client.infer(TRITON_MODEL, [tensor], ["RESULT"])
                )
            except TritonError as exc:
                raise PipelineError(
                    f"Triton at {self.url} could not score {TRITON_MODEL}: {exc}. "
                    "Is Triton up and the production model synced (serving.sync)?"
                ) from None
            out.extend(float(json.loads(r)["score"]) for r in res["RESULT"])
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        """Close the connection pool and the event loop."""
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


# ---------------------------------------------------------------- to-file


class Writer:
    """JSON lines or CSV output (by suffix): input columns + ``mining`` + ``mining_score``."""

    def __init__(self, path: str) -> None:
        """Open ``path`` for writing (parent directories created)."""
        import fsspec

        self.path = path
        self.csv = _is_csv(path)
        if "://" not in path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._of = fsspec.open(path, "wb", compression="infer")
        self._fh: BinaryIO = self._of.open()
        self._text: TextIO | None = None
        self._csv: csv.DictWriter | None = None
        self._warned = False

    def write(
        self,
        records: list[dict[str, Any]],
        raws: list[bytes | None],
        flags: list[bool],
        scores: list[float],
    ) -> None:
        """Append records with their ``mining`` flag and ``mining_score``."""
        if not self.csv:
            lines = []
            for rec, raw, fl, sc in zip(records, raws, flags, scores, strict=True):
                if raw is not None and "mining" not in rec and "mining_score" not in rec:
                    # The input line itself plus two keys: no re-encoding of ~175 fields.
                    lines.append(b"%s,\"mining\":%d,\"mining_score\":%s}\n"
                                 % (raw.rstrip()[:-1], fl, repr(sc).encode()))  # fmt: skip
                else:
                    out = rec | {"mining": int(fl), "mining_score": sc}
                    lines.append(orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE))
            self._fh.write(b"".join(lines))
            return
        if self._text is None:
            self._text = io.TextIOWrapper(self._fh, encoding="utf-8", newline="")
        for rec, fl, sc in zip(records, flags, scores, strict=True):
            rec = rec | {"mining": int(fl), "mining_score": sc}
            if self._csv is None:
                self._csv = csv.DictWriter(self._text, fieldnames=list(rec), restval="")
                self._csv.writeheader()
            extra = rec.keys() - set(self._csv.fieldnames)
            if extra and not self._warned:
                log.warning(
                    "%s: rows carry columns not in the first row's header (%s); "
                    "they are not written to the CSV",
                    self.path,
                    ", ".join(sorted(extra)[:5]),
                )
                self._warned = True
            self._csv.writerow({k: rec.get(k, "") for k in self._csv.fieldnames})

    def close(self) -> None:
        """Flush and close."""
        if self._text is not None:
            self._text.flush()
            self._text.detach()
        self._fh.close()
        self._of.close()


# ---------------------------------------------------------------- the pipeline


def run(
    inputs: Sequence[str],
    output: str,
    scorer: Scorer,
    threshold: float = DEFAULT_THRESHOLD,
    on_error: str = "skip",
    batch_size: int = 8192,
    progress: bool = True,
) -> Summary:
    """Run the pipeline over ``inputs`` into ``output``; raise PipelineError on a fatal bad row."""
    from tqdm import tqdm

    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    try:
        files = expand(inputs)
    except DataError as exc:
        raise PipelineError(str(exc)) from None
    summary = Summary()
    start = time.perf_counter()
    writer = Writer(output)
    bar = tqdm(unit=" rows", disable=not progress, file=sys.stderr, mininterval=0.5)
    recs: list[dict[str, Any]] = []
    raws: list[bytes | None] = []
    rows = np.empty((batch_size, N_FEATURES), dtype=np.float32)

    def flush() -> None:
        if not recs:
            return
        s = scorer(rows[: len(recs)], recs)
        if len(s) != len(recs):
            raise PipelineError(f"the scorer returned {len(s)} scores for {len(recs)} rows")
        flags = s >= threshold
        writer.write(recs, raws, flags.tolist(), [round(x, 6) for x in s.tolist()])
        summary.scored += len(recs)
        summary.flagged += int(flags.sum())
        bar.update(len(recs))
        recs.clear()
        raws.clear()

    try:
        for path, no, rec, raw in read_rows(files):
            summary.rows += 1
            try:
                if isinstance(rec, Exception):
                    raise rec
                rows[len(recs)] = parse_record(rec)
            except (FeatureError, ValueError) as exc:
                msg = f"{path}:{no}: {str(exc).removeprefix('record: ')}"
                if on_error == "fail":
                    raise PipelineError(f"bad row {msg} (use --on-error skip to skip it)") from None
                summary.skipped += 1
                if len(summary.errors) < 1000:
                    summary.errors.append(msg)
                log.warning("skipped bad row %s", msg)
                continue
            recs.append(rec)
            raws.append(raw)
            if len(recs) == batch_size:
                flush()
        flush()
    finally:
        bar.close()
        writer.close()
        summary.seconds = time.perf_counter() - start
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 0 on success, 2 on a fatal error (message on stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m training.abp_pipeline", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--input", nargs="+", required=True, help="files or globs (.jsonlines/.csv)"
    )
    parser.add_argument("--output", required=True, help="output file (.jsonlines or .csv)")
    parser.add_argument(
        "--model",
        default=f"models:/{MODEL_NAME}@{PROD_ALIAS}",
        help="booster file or MLflow model URI (default: the production alias)",
    )
    parser.add_argument("--triton", action="store_true", help="score on Triton instead")
    parser.add_argument("--on-error", choices=("skip", "fail"), default="skip")
    parser.add_argument("--threshold", type=float, default=None, help="score >= this is mining")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    triton: TritonScorer | None = None
    try:
        if args.triton:
            from secml.settings import get_settings

            settings = get_settings()
            triton = TritonScorer(settings.triton_url, settings.triton_timeout_s)
            scorer: Scorer = triton
            model_name, model_threshold = f"triton:{TRITON_MODEL}", None
        else:
            scorer, model_name, model_threshold = local_scorer(args.model)
        threshold = (
            args.threshold
            if args.threshold is not None
            else (model_threshold if model_threshold is not None else DEFAULT_THRESHOLD)
        )
        log.info("scoring with %s (threshold %.3f)", model_name, threshold)
        summary = run(
            args.input,
            args.output,
            scorer,
            threshold,
            args.on_error,
            args.batch_size,
            progress=not args.no_progress,
        )
    except PipelineError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("cannot read or write a file: %s", exc)
        return 2
    finally:
        if triton is not None:
            triton.close()
    log.info("done: %s -> %s", summary.line(), args.output)
    if summary.skipped:
        log.warning("%d bad row(s) skipped; first: %s", summary.skipped, summary.errors[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
