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
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
import orjson

from secml.abp import MODEL_NAME, PROD_ALIAS
from secml.abp.alerts import DEFAULT_GAP, Episode, EpisodeTracker
from secml.abp.model import (
    DEFAULT_THRESHOLD,
    DataError,
    booster_temporal,
    expand,
    load_booster,
    score,
)
from secml.abp.temporal import TemporalState
from training.abp_read import Block, Featurized, featurized_blocks, is_csv, read_blocks

log = logging.getLogger(__name__)

TRITON_MODEL = "abp_nvsmi_xgb"
# (the rows' 18 features, the rows as JSON text, their GPU uuids) -> P(mining) per row
Scorer = Callable[[np.ndarray, list[bytes], list[str | None] | None], np.ndarray]


class PipelineError(RuntimeError):
    """A fatal pipeline error with a message a person can act on."""


@dataclass
class Summary:
    """What one pipeline run did."""

    rows: int = 0
    scored: int = 0
    flagged: int = 0
    alerts: int = 0  # GPU episodes written to the alerts file
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
    # One per-GPU history for the whole run: each GPU's rows are read in input (time) order.
    state = TemporalState(booster_temporal(booster) or 2)

    def scorer(X: np.ndarray, _lines: list[bytes], uuids: list[str | None] | None) -> np.ndarray:
        return score(booster, X, uuids, state)

    return scorer, name, float(attr) if attr else None


class TritonScorer:
    """Score rows on Triton's ``abp_nvsmi_xgb`` model: the rows' 18 features (FP32) and GPU
    uuids in, SCORE and the served model's THRESHOLD out (typed tensors over gRPC)."""

    def __init__(self, url: str, timeout_s: float, max_batch: int = 4096) -> None:
        """Connect lazily to Triton's gRPC endpoint ``url``."""
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
        self.threshold: float | None = None  # the served model's own, as Triton reports it

    def __call__(
        self, X: np.ndarray, _lines: list[bytes], uuids: list[str | None] | None = None
    ) -> np.ndarray:
        """P(mining) from Triton for rows given as their feature matrix."""
        from serving.triton import TritonError, bytes_column, fp32

        out: list[np.ndarray] = []
        for i in range(0, len(X), self.max_batch):
            part = X[i : i + self.max_batch]
            gpu = [""] * len(part) if uuids is None else uuids[i : i + self.max_batch]
            tensors = [fp32("FEATURES", part), bytes_column("GPU", [str(u or "") for u in gpu])]
            try:
                res = self._loop.run_until_complete(
                    self._client.infer(TRITON_MODEL, tensors, ["SCORE", "THRESHOLD"])
                )
            except TritonError as exc:
                raise PipelineError(
                    f"Triton at {self.url} could not score {TRITON_MODEL}: {exc}. "
                    "Is Triton up and the production model synced (serving.sync)?"
                ) from None
            out.append(np.asarray(res["SCORE"], dtype=np.float32).reshape(-1))
            if len(res["THRESHOLD"]):
                self.threshold = float(np.asarray(res["THRESHOLD"]).reshape(-1)[0])
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)

    def close(self) -> None:
        """Close the channel and the event loop."""
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


# ---------------------------------------------------------------- to-file


class Writer:
    """JSON lines or CSV output (by suffix): input columns + ``mining`` + ``mining_score``."""

    def __init__(self, path: str) -> None:
        """Open ``path`` for writing (parent directories created)."""
        import fsspec

        self.path = path
        self.csv = is_csv(path)
        if "://" not in path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._of = fsspec.open(path, "wb", compression="infer")
        self._fh: BinaryIO = self._of.open()
        self._text: TextIO | None = None
        self._csv: csv.DictWriter | None = None
        self._warned = False

    def write(self, block: Block, fz: Featurized, flags: list[bool], scores: list[float]) -> None:
        """Append the block's scored rows with their ``mining`` flag and ``mining_score``."""
        if not self.csv:
            out = []
            for k, (pos, fl, sc) in enumerate(zip(fz.kept, flags, scores, strict=True)):
                if block.records is None and k not in fz.special:
                    # The input line itself plus two keys: no re-encoding of ~175 fields.
                    raw = block.lines[pos].rstrip()
                    out.append(b"%s,\"mining\":%d,\"mining_score\":%s}\n"
                               % (raw[:-1], fl, repr(sc).encode()))  # fmt: skip
                else:
                    rec = self._record(block, fz, k, pos) | {"mining": int(fl), "mining_score": sc}
                    out.append(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
            self._fh.write(b"".join(out))
            return
        if self._text is None:
            self._text = io.TextIOWrapper(self._fh, encoding="utf-8", newline="")
        for k, (pos, fl, sc) in enumerate(zip(fz.kept, flags, scores, strict=True)):
            rec = self._record(block, fz, k, pos) | {"mining": int(fl), "mining_score": sc}
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

    @staticmethod
    def _record(block: Block, fz: Featurized, k: int, pos: int) -> dict[str, Any]:
        """The k-th scored row of a block as a dict."""
        if block.records is not None:
            rec = block.records[pos]
            assert isinstance(rec, dict)
            return rec
        return fz.special.get(k) or orjson.loads(block.lines[pos])

    def close(self) -> None:
        """Flush and close."""
        if self._text is not None:
            self._text.flush()
            self._text.detach()
        self._fh.close()
        self._of.close()


# ---------------------------------------------------------------- the pipeline


def _write_alerts(fh: BinaryIO, episodes: list[Episode]) -> int:
    """Append one JSON line per episode; return how many."""
    fh.write(
        b"".join(orjson.dumps(e.as_dict(), option=orjson.OPT_APPEND_NEWLINE) for e in episodes)
    )
    return len(episodes)


def run(
    inputs: Sequence[str],
    output: str,
    scorer: Scorer,
    threshold: float | None = DEFAULT_THRESHOLD,
    on_error: str = "skip",
    batch_size: int = 4096,
    progress: bool = True,
    alerts: str | None = None,
    alert_gap: int = DEFAULT_GAP,
    alert_sink: Callable[[list[Episode]], object] | None = None,
) -> Summary:
    """Run the pipeline over ``inputs`` into ``output``; raise PipelineError on a fatal bad row.

    ``batch_size`` rows are read, featurized, scored and written at a time, in input order.
    ``threshold`` None: the scorer's own (the threshold Triton reports for its model), else 0.5.
    GPU mining episodes (one per run of flagged samples) go to the ``alerts`` file and/or to
    ``alert_sink`` (e.g. the detections store) as they close.
    """
    from tqdm import tqdm

    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    try:
        files = expand(inputs)
    except DataError as exc:
        raise PipelineError(str(exc)) from None
    summary = Summary()
    start = time.perf_counter()
    writer = Writer(output)
    tracker = EpisodeTracker(alert_gap) if alerts or alert_sink else None
    alert_fh = open(alerts, "wb") if alerts else None  # noqa: SIM115 - closed in finally

    def emit(episodes: list[Episode]) -> int:
        if alert_fh is not None:
            _write_alerts(alert_fh, episodes)
        if alert_sink is not None and episodes:
            alert_sink(episodes)
        return len(episodes)

    bar = tqdm(unit=" rows", disable=not progress, file=sys.stderr, mininterval=0.5)
    try:
        for block, fz in featurized_blocks(read_blocks(files, batch_size)):
            summary.rows += len(fz.kept) + len(fz.errors)
            for pos, what in fz.errors:
                msg = f"{block.path}:{block.line_no(pos)}: {what}"
                if on_error == "fail":
                    raise PipelineError(f"bad row {msg} (use --on-error skip to skip it)")
                summary.skipped += 1
                if len(summary.errors) < 1000:
                    summary.errors.append(msg)
                log.warning("skipped bad row %s", msg)
            if not fz.kept:
                continue
            s = scorer(fz.X, [block.lines[pos] for pos in fz.kept], fz.uuids)
            if len(s) != len(fz.kept):
                raise PipelineError(f"the scorer returned {len(s)} scores for {len(fz.kept)} rows")
            thr = threshold
            if thr is None:
                thr = getattr(scorer, "threshold", None) or DEFAULT_THRESHOLD
            flags = s >= thr
            writer.write(block, fz, flags.tolist(), [round(x, 6) for x in s.tolist()])
            summary.scored += len(fz.kept)
            summary.flagged += int(flags.sum())
            if tracker is not None:
                none = [None] * len(s)
                eps = tracker.update(fz.uuids or none, fz.times or none, s.tolist(), flags.tolist())
                summary.alerts += emit(eps)
            bar.update(len(fz.kept))
    finally:
        bar.close()
        writer.close()
        if tracker is not None:
            try:
                summary.alerts += emit(tracker.flush())
            finally:
                if alert_fh is not None:
                    alert_fh.close()
        summary.seconds = time.perf_counter() - start
    return summary


def _store_sink(model: str, threshold: float | None) -> Callable[[list[Episode]], object]:
    """Write episodes to the detections store (one row each, source ``nvsmi-episode``)."""
    from secml.store import get_store

    store = get_store()
    return lambda eps: store.add_detections([e.detection(model, threshold) for e in eps])


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
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per batch")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--alerts", default=None, help="also write one JSON line per GPU mining episode here"
    )
    parser.add_argument(
        "--store-alerts",
        action="store_true",
        help="also store one detection per GPU mining episode in the detections store",
    )
    parser.add_argument(
        "--alert-gap",
        type=int,
        default=DEFAULT_GAP,
        help="unflagged samples of a GPU that close its episode",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    triton: TritonScorer | None = None
    try:
        if args.triton:
            from secml.settings import get_settings

            settings = get_settings()
            triton = TritonScorer(settings.triton_grpc_url or "", settings.triton_timeout_s)
            scorer: Scorer = triton
            model_name, model_threshold = f"triton:{TRITON_MODEL}", None
        else:
            scorer, model_name, model_threshold = local_scorer(args.model)
        # an explicit --threshold, else the model's stored (calibrated) one; on Triton, the one
        # the served model reports with its scores
        threshold = args.threshold if args.threshold is not None else model_threshold
        if threshold is None and not args.triton:
            threshold = DEFAULT_THRESHOLD
        shown = "the served model's" if threshold is None else f"{threshold:.6g}"
        log.info("scoring with %s (threshold %s)", model_name, shown)
        summary = run(
            args.input,
            args.output,
            scorer,
            threshold,
            args.on_error,
            args.batch_size,
            progress=not args.no_progress,
            alerts=args.alerts,
            alert_gap=args.alert_gap,
            alert_sink=_store_sink(model_name, threshold) if args.store_alerts else None,
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
