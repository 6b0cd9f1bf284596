"""ABP model steps as plain functions: load, label, split, train, score, evaluate, plot.

Prefect tasks in ``training/abp_flow.py`` are thin wrappers around these. ``score`` and
``load_booster`` use only numpy and xgboost so the Triton python-backend model can call them.
"""

from __future__ import annotations

import base64
import csv
import functools
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import xgboost as xgb

from secml.abp.features import (
    DERIVED,
    FEATURES,
    MODEL_FEATURES,
    N_FEATURES,
    PREFIX,
    derive,
    to_matrix,
    util_blind,
)
from secml.abp.generator import MINING_PROFILES, TIMESTAMP_FORMAT, TIMESTAMP_KEY, UUID_KEY
from secml.abp.latch import BUSY_UTIL
from secml.abp.temporal import DEFAULT_WINDOW, TEMPORAL, TemporalState

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
LABEL_REQUIRED = ("uuid", "timestamp", "mining")


class DataError(ValueError):
    """Training data or labels that cannot be used; the message names the file and line."""


@dataclass
class TrainParams:
    """XGBoost hyper-parameters for the ABP classifier."""

    # Shallow trees, each seeing half the columns: simple interactions that carry over to GPU
    # models and miners the training fleet lacks. Chosen on the training generator only
    # (training.abp_eval, leave-one-GPU-model-out and leave-one-mining-profile-out, 3 seeds;
    # the independent generator was not consulted): against depth 6 / 200 trees / colsample
    # 0.6, recall at 0.1% FPR on the test curve 0.930 -> 0.952 (LOMO) and 0.732 -> 0.754
    # (LOPO); depth 4 with min_child_weight 20 and learning rate 0.05 with 400 trees were
    # tried too and did less well.
    n_estimators: int = 400
    max_depth: int = 3
    learning_rate: float = 0.1
    subsample: float = 0.8
    # a leaf needs some weight of evidence (min_child_weight 5 over 1 helped held-out GPUs)
    colsample_bytree: float = 0.5
    min_child_weight: float = 5.0
    seed: int = 0
    # Append the scale-free ratios of ``features.DERIVED`` to the 18 raw columns: they help
    # on GPU models absent from the training data (bench/bench_abp_generalise.py).
    derived: bool = True
    # Append the per-GPU rolling-window features of ``secml.abp.temporal`` (each GPU's last
    # ``window`` samples): duty cycles, memory held while utilisation drops, flat clocks/power.
    # Off by default: over 3 seeds of training.abp_eval (LOMO, LOPO, independent generator) the
    # temporal model ranked about as well (recall at 0.1% FPR on the test curve 0.94 vs 0.93
    # LOMO, 0.58 vs 0.53 independent, 0.68 vs 0.74 LOPO) but caught fewer miners at the
    # threshold calibrated out of fold (0.60 vs 0.67 LOMO, 0.52 vs 0.62 independent).
    temporal: bool = False
    window: int = DEFAULT_WINDOW
    # Score a GPU's pauses by its allocation episode (``secml.abp.latch``): a duty-cycled
    # miner's idle samples, DAG still resident, carry the running score of its busy ones.
    latch: bool = True
    # Score rows whose utilisation reads N/A (MIG) with a second booster trained on every row
    # seen as a MIG board sees it (``features.util_blind``), stored inside the first
    # (``na_model`` attribute). Learnt from the few MIG boards of a fleet alone, an idle MIG
    # board unlike them scored as a miner (an idle A100 MIG board held out took 3.2% FPR).
    # training.abp_eval, 3 seeds, recall at 0.1% FPR on the test curve: leave one GPU model out
    # 0.942 -> 0.973 (FPR at the calibrated threshold 0.37% -> 0.01%), leave one profile out
    # 0.815 -> 0.831, independent generator (no MIG) 0.848 unchanged.
    na_model: bool = True
    # Deal the training GPUs into calibration folds this many times and choose the threshold
    # over every draw's out-of-fold scores together (``oof_threshold``). One 3-fold draw's
    # threshold for 0.1% FPR moved with the fold seed alone (0.54 to 0.99 on one fleet). Scored
    # on the independent generator (the model fixed, 6 fold draws on each of seeds 0-6, 96 GPUs
    # x 6 h at 10 s): log-odds s.d. of the threshold within a seed 1.01 -> 0.51, FPR 0.200% ->
    # 0.147%, recall 0.826 -> 0.814; runs over 0.3% FPR 24% -> 14%. Costs
    # ``folds * calibration_repeats`` extra trainings.
    calibration_repeats: int = 3

    def xgb_params(self) -> dict[str, Any]:
        """The booster parameters passed to ``xgb.train``."""
        return {
            "objective": "binary:logistic",
            "eval_metric": ["logloss", "auc"],
            "tree_method": "hist",
            "device": device(),
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "seed": self.seed,
            "nthread": 0,
        }

    def as_dict(self) -> dict[str, Any]:
        """Parameters for logging."""
        return asdict(self)


def device() -> str:
    """``cuda`` when this xgboost build supports CUDA and an NVIDIA GPU is visible, else ``cpu``."""
    if xgb.build_info().get("USE_CUDA") and shutil.which("nvidia-smi"):
        return "cuda"
    return "cpu"


# ---------------------------------------------------------------- loading


def expand(paths: str | Sequence[str]) -> list[str]:
    """Expand file paths or globs (any fsspec URL) into a sorted list of files."""
    import fsspec

    if isinstance(paths, str):
        paths = [paths]
    files: list[str] = []
    for p in paths:
        fs, _, found = fsspec.get_fs_token_paths(p)
        found = [f for f in found if fs.isfile(f)]
        if not found:
            raise DataError(f"no file matches {p!r}")
        proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        files.extend(f if proto in ("file", "local") else f"{proto}://{f}" for f in found)
    return sorted(dict.fromkeys(files))


def read_jsonlines(paths: str | Sequence[str]) -> list[dict[str, Any]]:
    """Read nvsmi JSON-lines files (paths or globs); a bad line is an error naming file:line."""
    import fsspec

    records: list[dict[str, Any]] = []
    for path in expand(paths):
        with fsspec.open(path, "rt", encoding="utf-8") as fh:
            for no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{no}: invalid JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise DataError(
                        f"{path}:{no}: expected a JSON object, got {type(rec).__name__}"
                    )
                records.append(rec)
    log.info("read %d records from %s", len(records), paths)
    return records


def read_labels(paths: str | Sequence[str]) -> dict[tuple[str, str], tuple[int, str]]:
    """Read labels CSVs into ``{(uuid, timestamp): (mining, profile)}``."""
    import fsspec

    out: dict[tuple[str, str], tuple[int, str]] = {}
    for path in expand(paths):
        with fsspec.open(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in LABEL_REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: labels file lacks column(s) {', '.join(missing)}")
            for row in reader:
                if row["mining"] not in ("0", "1"):
                    raise DataError(
                        f"{path}:{reader.line_num}: mining must be 0 or 1, got {row['mining']!r}"
                    )
                out[(row["uuid"], row["timestamp"])] = (
                    int(row["mining"]),
                    row.get("profile") or "unknown",
                )
    return out


def parse_time(value: Any) -> datetime:
    """Parse an nvidia-smi timestamp ("Mon Nov 02 10:00:00 2026", taken as UTC) or ISO 8601."""
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be a string, got {type(value).__name__}")
    try:
        return datetime.strptime(value.strip(), TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        parsed = datetime.fromisoformat(value.strip())
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def record_key(record: dict[str, Any]) -> tuple[str, str]:
    """The (gpu uuid, timestamp) pair that joins a record to its label."""
    return (str(record.get(UUID_KEY, "")), str(record.get(TIMESTAMP_KEY, "")))


@dataclass
class Dataset:
    """Feature matrix plus what the split and the evaluation need, row-aligned."""

    X: np.ndarray
    y: np.ndarray
    gpu: np.ndarray  # uuid per row
    time: np.ndarray  # epoch seconds per row
    profile: np.ndarray  # workload profile per row ("analyst" for store-only labels)
    T: np.ndarray | None = None  # per-GPU temporal features (secml.abp.temporal), row-aligned

    def __len__(self) -> int:
        """Number of rows."""
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Dataset:
        """Rows ``idx`` as a new dataset."""
        T = None if self.T is None else self.T[idx]
        return Dataset(
            self.X[idx], self.y[idx], self.gpu[idx], self.time[idx], self.profile[idx], T
        )

    def window(self) -> tuple[str, str]:
        """First and last sample time as ISO 8601 UTC."""
        lo, hi = float(self.time.min()), float(self.time.max())
        return tuple(  # type: ignore[return-value]
            datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") for t in (lo, hi)
        )


@dataclass(frozen=True)
class EpisodeLabel:
    """An analyst's label of one GPU episode alert: every sample of ``uuid`` from ``start`` to
    ``end`` (epoch seconds, both included) is mining (1) or not (0)."""

    uuid: str
    start: float
    end: float
    mining: int

    @classmethod
    def of(cls, record: Any, mining: int) -> EpisodeLabel:
        """From an episode alert's stored record (``secml.abp.alerts.Episode.as_dict``);
        DataError naming the field when it is not one."""
        if not isinstance(record, dict):
            raise DataError(f"episode record must be an object, got {type(record).__name__}")
        uuid = record.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise DataError(f"episode record has no GPU uuid (uuid={uuid!r})")
        try:
            lo, hi = (parse_time(record.get(k)).timestamp() for k in ("start", "end"))
        except ValueError as exc:
            raise DataError(f"episode of {uuid}: bad start/end: {exc}") from None
        if hi < lo:
            raise DataError(f"episode of {uuid}: end {record['end']!r} before start")
        if mining not in (0, 1):
            raise DataError(f"episode of {uuid}: label must be 0 or 1, got {mining!r}")
        return cls(uuid, lo, hi, int(mining))


def _episode_lookup(
    episodes: Iterable[EpisodeLabel],
) -> Callable[[dict[str, Any], int], int | None]:
    """``(record, index) -> label`` of the episode covering that sample (the later one listed
    wins where two overlap), None outside every episode; only a GPU with an episode has its
    timestamp read here."""
    by_gpu: dict[str, list[EpisodeLabel]] = {}
    for ep in episodes:
        by_gpu.setdefault(ep.uuid, []).append(ep)

    def find(rec: dict[str, Any], index: int) -> int | None:
        eps = by_gpu.get(str(rec.get(UUID_KEY, "")))
        if not eps:
            return None
        t = _epoch(rec, index)
        for ep in reversed(eps):
            if ep.start <= t <= ep.end:
                return ep.mining
        return None

    return find


def build_dataset(
    records: list[dict[str, Any]],
    labels: dict[tuple[str, str], tuple[int, str]],
    analyst: Iterable[tuple[dict[str, Any], int]] = (),
    window: int = DEFAULT_WINDOW,
    episodes: Iterable[EpisodeLabel] = (),
) -> tuple[Dataset, dict[str, int]]:
    """Join records to labels and analyst labels; return the dataset and counts.

    Precedence: an analyst's label of the sample itself (``analyst``), then of an episode alert
    covering it (``episodes``: every sample of the GPU from the episode's start to its end,
    records with no labels file included), then the labels files.
    """
    in_episode = _episode_lookup(episodes)
    episode_rows = 0
    overrides: dict[tuple[str, str], int] = {}
    extra: list[dict[str, Any]] = []
    extra_y: list[int] = []
    for rec, mining in analyst:
        key = record_key(rec)
        overrides[key] = mining
        extra.append(rec)
        extra_y.append(mining)
    rows, ys, gpus, times, profiles = [], [], [], [], []
    unlabelled = overridden = 0
    seen: set[tuple[str, str]] = set()
    for i, rec in enumerate(records):
        key = record_key(rec)
        lab = labels.get(key)
        ep = None if key in overrides else in_episode(rec, i)
        if key in overrides:
            y, prof = overrides[key], (lab[1] if lab else "analyst")
            overridden += 1
        elif ep is not None:
            y, prof = ep, (lab[1] if lab else "analyst")
            episode_rows += 1
        elif lab is None:
            unlabelled += 1
            continue
        else:
            y, prof = lab
        seen.add(key)
        rows.append(rec)
        ys.append(y)
        gpus.append(key[0])
        times.append(_epoch(rec, i))
        profiles.append(prof)
    added = 0
    for rec, y in zip(extra, extra_y, strict=True):
        key = record_key(rec)
        if key in seen:
            continue
        seen.add(key)
        rows.append(rec)
        ys.append(y)
        gpus.append(key[0])
        times.append(_epoch(rec, -1))
        profiles.append("analyst")
        added += 1
    if unlabelled:
        log.warning(
            "%d records have no label (by GPU uuid + timestamp) and are left out", unlabelled
        )
    if not rows:
        raise DataError("no labelled records: check that the labels match the data files")
    ds = Dataset(
        X=to_matrix(rows),
        y=np.asarray(ys, dtype=np.int32),
        gpu=np.asarray(gpus),
        time=np.asarray(times, dtype=np.float64),
        profile=np.asarray(profiles),
    )
    ds.T = temporal_of(ds.X, ds.gpu, ds.time, window)
    counts = {
        "rows": len(ds),
        "unlabelled": unlabelled,
        "analyst_overrides": overridden,
        "analyst_added": added,
        "episode_labelled": episode_rows,
        "mining": int(ds.y.sum()),
    }
    return ds, counts


def temporal_of(
    X: np.ndarray, gpu: np.ndarray, time: np.ndarray, window: int = DEFAULT_WINDOW
) -> np.ndarray:
    """Temporal features of rows in any order: each GPU's rows are fed in time order."""
    order = np.lexsort((time, gpu))
    T = np.empty((len(X), len(TEMPORAL)), dtype=np.float32)
    T[order] = TemporalState(window).features(X[order], gpu[order].tolist())
    return T


def _epoch(rec: dict[str, Any], index: int) -> float:
    """Epoch seconds of a record's timestamp; errors name the record."""
    try:
        return parse_time(rec.get(TIMESTAMP_KEY)).timestamp()
    except ValueError as exc:
        raise DataError(f"record {index}: bad {TIMESTAMP_KEY}: {exc}") from None


# ---------------------------------------------------------------- split


def split(
    ds: Dataset, by: str = "gpu", test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into train/test by GPU or by time; never at random across samples.

    ``gpu``: whole GPUs go to one side, chosen separately among GPUs that ever mined and
    those that never did, so both sides see both classes. ``time``: the last
    ``test_fraction`` of the time window is the test set, with a gap of 1% of the window
    dropped before the cut so neighbouring samples do not straddle it.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    idx = np.arange(len(ds))
    if by == "gpu":
        rng = np.random.default_rng(seed)
        gpus = np.unique(ds.gpu)
        mined = {g for g in gpus if ds.y[ds.gpu == g].any()}
        test: list[str] = []
        for group in (sorted(mined), sorted(set(gpus) - mined)):
            if len(group) < 2:
                continue
            k = max(1, round(len(group) * test_fraction))
            test.extend(rng.permutation(group)[:k])
        is_test = np.isin(ds.gpu, test)
    elif by == "time":
        lo, hi = ds.time.min(), ds.time.max()
        cut = lo + (hi - lo) * (1 - test_fraction)
        gap = (hi - lo) * 0.01
        is_test = ds.time >= cut
        keep = is_test | (ds.time < cut - gap)
        idx, is_test = idx[keep], is_test[keep]
    else:
        raise ValueError(f"split must be 'gpu' or 'time', got {by!r}")
    train_idx, test_idx = idx[~is_test], idx[is_test]
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(
            f"split by {by} left an empty side ({len(train_idx)} train, {len(test_idx)} test); "
            "use more GPUs or hours of data"
        )
    return train_idx, test_idx


# ---------------------------------------------------------------- train / score


def model_inputs(X: np.ndarray, derived: Sequence[str], T: np.ndarray | None = None) -> np.ndarray:
    """The matrix a booster sees: the (n, 18) raw features, the ``derived`` columns, then ``T``."""
    out = derive(X, derived) if derived else np.asarray(X, dtype=np.float32)
    if T is not None:
        out = np.hstack([out, np.asarray(T, dtype=np.float32)])
    return out


def _temporal_input(ds: Dataset, params: TrainParams) -> np.ndarray | None:
    """The dataset's temporal features if ``params`` asks for them (computed when absent)."""
    if not params.temporal:
        return None
    if ds.T is None or params.window != DEFAULT_WINDOW:
        return temporal_of(ds.X, ds.gpu, ds.time, params.window)
    return ds.T


IDLE_POWER_SHARE = 0.3
_UTIL_COL = FEATURES.index(PREFIX + "utilization.gpu_util")


def per_sample_evidence(ds: Dataset) -> Dataset:
    """``ds`` less the mining rows of an idle GPU (utilisation below the latch's busy level).

    A duty-cycled miner's pause (utilisation 0, DAG resident) is, sample by sample, the same as
    a stopped job holding memory; taught as mining, a per-sample model learns whatever tells
    them apart in the generator (the DAG's size) instead. With the allocation latch those rows
    are the latch's to flag, from the episode's busy samples, so the booster learns only from
    rows that show their work. Where utilisation reads N/A (MIG), a row counts as idle when it
    draws under ``IDLE_POWER_SHARE`` of the most that GPU draws in ``ds`` (a MIG miner's pauses
    otherwise taught the model that an idle MIG board mines).
    """
    util = ds.X[:, _UTIL_COL]
    idle = util < BUSY_UTIL
    na = np.isnan(util)
    if na.any():
        power = ds.X[:, FEATURES.index(PREFIX + "power_readings.power_draw")].astype(np.float64)
        _, gpu_of = np.unique(ds.gpu, return_inverse=True)
        top = np.full(gpu_of.max() + 1, -np.inf)
        np.fmax.at(top, gpu_of, np.nan_to_num(power, nan=-np.inf))
        idle |= na & (power < IDLE_POWER_SHARE * top[gpu_of])
    drop = (ds.y == 1) & idle
    return ds.subset(np.flatnonzero(~drop)) if drop.any() else ds


def train(ds: Dataset, params: TrainParams, evals: Dataset | None = None) -> xgb.Booster:
    """Fit the XGBoost classifier (hist; CUDA when present) on ``ds``."""
    if len(np.unique(ds.y)) < 2:
        raise DataError("training data holds one class only; need mining and benign rows")
    # No feature names on the booster: callers (Triton included) pass plain (n, 18) matrices
    # in FEATURES order and ``score`` appends the derived columns; the list of columns the
    # booster sees is stored as the ``features`` attribute.
    derived = DERIVED if params.derived else ()
    temporal = TEMPORAL if params.temporal else ()
    if params.latch:
        ds = per_sample_evidence(ds)
    dtrain = xgb.DMatrix(
        model_inputs(ds.X, derived, _temporal_input(ds, params)), label=ds.y, missing=np.nan
    )
    watch = [(dtrain, "train")]
    if evals is not None:
        dev = xgb.DMatrix(
            model_inputs(evals.X, derived, _temporal_input(evals, params)),
            label=evals.y,
            missing=np.nan,
        )
        watch.append((dev, "eval"))
    booster = xgb.train(
        params.xgb_params(),
        dtrain,
        num_boost_round=params.n_estimators,
        evals=watch,
        verbose_eval=False,
    )
    booster.set_attr(
        features=json.dumps(list(FEATURES + derived + temporal)),
        threshold=str(DEFAULT_THRESHOLD),
        window=str(params.window),
        latch="1" if params.latch else "0",
    )
    if params.na_model:
        blind = xgb.DMatrix(model_inputs(util_blind(ds.X), derived), label=ds.y, missing=np.nan)
        inner = xgb.train(
            params.xgb_params(), blind, num_boost_round=params.n_estimators, verbose_eval=False
        )
        booster.set_attr(na_model=base64.b64encode(inner.save_raw("ubj")).decode("ascii"))
    return booster


@functools.lru_cache(maxsize=64)
def _derived_of(attr: str) -> tuple[str, ...]:
    """The derived columns named by a booster's ``features`` attribute (parsed once per text)."""
    try:
        names = json.loads(attr)
    except json.JSONDecodeError:
        raise ValueError(f"booster attribute 'features' is not JSON: {attr[:80]!r}") from None
    if not isinstance(names, list) or tuple(names[:N_FEATURES]) != FEATURES:
        raise ValueError(
            "booster attribute 'features' does not start with the 18 nvidia-smi features "
            f"(secml.abp.features.FEATURES): {attr[:120]!r}"
        )
    extra = tuple(names[N_FEATURES:])
    if extra[-len(TEMPORAL) :] == TEMPORAL:
        extra = extra[: -len(TEMPORAL)]
    unknown = [n for n in extra if n not in DERIVED]
    if unknown:
        raise ValueError(
            f"booster expects derived feature(s) {unknown} this code does not compute; "
            f"known: {', '.join(DERIVED)}"
        )
    return extra


def booster_derived(booster: xgb.Booster) -> tuple[str, ...]:
    """The derived columns ``booster`` expects after the 18 raw ones (empty for old boosters).

    Read from the ``features`` attribute ``train`` stores; a booster without one (saved
    elsewhere) is taken as raw-only unless its width is the 18 raw + all derived columns.
    """
    attr = booster.attr("features")
    if attr is None:
        return DERIVED if booster.num_features() == len(MODEL_FEATURES) else ()
    return _derived_of(attr)


def booster_temporal(booster: xgb.Booster) -> int:
    """The temporal window (samples) the booster's features were computed with; 0: none."""
    attr = booster.attr("features")
    if attr is None or not attr.rstrip().endswith(json.dumps(TEMPORAL[-1]) + "]"):
        return 0
    return int(booster.attr("window") or DEFAULT_WINDOW)


def booster_latch(booster: xgb.Booster) -> bool:
    """True when the booster's scores go through the per-GPU allocation latch."""
    return booster.attr("latch") == "1"


@functools.lru_cache(maxsize=16)
def na_booster(booster: xgb.Booster) -> xgb.Booster | None:
    """The booster for rows whose utilisation reads N/A, stored in ``booster`` (or None)."""
    attr = booster.attr("na_model")
    if not attr:
        return None
    inner = xgb.Booster()
    inner.load_model(bytearray(base64.b64decode(attr)))
    return inner


def raw_scores(booster: xgb.Booster, X: np.ndarray, T: np.ndarray | None = None) -> np.ndarray:
    """The booster's probabilities per row of the (n, 18) matrix, before latch and rescaling.

    Rows whose utilisation reads N/A go to the booster's N/A model when it has one
    (:func:`na_booster`), seeing those rows as ``features.util_blind`` does.
    """
    derived = booster_derived(booster)
    inner = na_booster(booster)
    na = util_na(X) if inner is not None else None
    if na is None or not na.any():
        s = booster.inplace_predict(model_inputs(X, derived, T))
        return np.asarray(s, dtype=np.float32).reshape(-1)
    # each row through one booster only
    s = np.empty(len(X), dtype=np.float32)
    if not na.all():
        part = booster.inplace_predict(model_inputs(X[~na], derived, None if T is None else T[~na]))
        s[~na] = np.asarray(part, dtype=np.float32).reshape(-1)
    blind = inner.inplace_predict(model_inputs(util_blind(X[na]), derived))
    s[na] = np.asarray(blind, dtype=np.float32).reshape(-1)
    return s


def booster_features(booster: xgb.Booster) -> tuple[str, ...]:
    """The columns the booster sees: the 18 raw features, any derived, any temporal ones."""
    return FEATURES + booster_derived(booster) + (TEMPORAL if booster_temporal(booster) else ())


def score(
    booster: xgb.Booster,
    X: np.ndarray,
    uuids: Sequence[str | None] | None = None,
    state: TemporalState | None = None,
    T: np.ndarray | None = None,
) -> np.ndarray:
    """Mining probability per row of an (n, 18) raw float matrix (NaN = missing).

    The derived columns the booster was trained with (its ``features`` attribute) are
    computed here, so every caller passes the same 18 columns; boosters trained on the
    18 alone get them unchanged. A booster with temporal features reads each GPU's history
    from ``state`` (rows keyed by ``uuids``, in time order per GPU), or from this call alone
    when no state is given; ``T`` passes temporal features computed already. A booster with
    the allocation latch (``latch`` attribute) has its scores folded through the same
    state's per-GPU allocation episodes (``secml.abp.latch``).
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise ValueError(f"expected an (n, {N_FEATURES}) feature matrix, got shape {X.shape}")
    if len(X) == 0:
        return np.empty(0, dtype=np.float32)
    window = booster_temporal(booster)
    latch = booster_latch(booster)
    if (window or latch) and state is None:
        state = TemporalState(window or DEFAULT_WINDOW)
    if window and T is None:
        T = state.features(X, uuids)  # type: ignore[union-attr]
    s = raw_scores(booster, X, T if window else None)
    if latch:
        s = state.latch.apply(X, s, uuids)  # type: ignore[union-attr]
    na_threshold = booster.attr("na_threshold")
    if na_threshold is not None:
        s = rescale_na(s, util_na(X), booster_threshold(booster), float(na_threshold))
    return s


def score_dataset(booster: xgb.Booster, ds: Dataset) -> np.ndarray:
    """Mining probability per row of a dataset, each GPU's history read in time order."""
    window = booster_temporal(booster)
    T = None
    if window:
        same = ds.T is not None and window == DEFAULT_WINDOW
        T = ds.T if same else temporal_of(ds.X, ds.gpu, ds.time, window)
    if not booster_latch(booster):
        return score(booster, ds.X, T=T)
    order = np.lexsort((ds.time, ds.gpu))  # each GPU's rows in time order for the latch
    out = np.empty(len(ds), dtype=np.float32)
    out[order] = score(
        booster, ds.X[order], ds.gpu[order].tolist(), T=None if T is None else T[order]
    )
    return out


def calibrate_threshold(y: np.ndarray, scores: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on (y, scores) is at most ``target_fpr``.

    At most ``floor(target_fpr * negatives)`` benign rows score at or above it. With no benign
    rows the default threshold is returned.
    """
    if not 0 <= target_fpr < 1:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    neg = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(y) == 0])[::-1]
    if len(neg) == 0:
        return DEFAULT_THRESHOLD
    k = int(np.floor(target_fpr * len(neg) + 1e-9))
    if k >= len(neg):
        return float(neg[-1])
    # strictly above the (k+1)-th highest benign score; float32 scores compare exactly
    return float(np.nextafter(np.float32(neg[k]), np.float32(np.inf)))


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, target_fpr: float) -> float:
    """Recall at the best threshold whose FPR on these rows is <= ``target_fpr``."""
    y = np.asarray(y)
    if not (y == 1).any() or not (y == 0).any():
        return math.nan
    t = calibrate_threshold(y, scores, target_fpr)
    return float((np.asarray(scores)[y == 1] >= t).mean())


def recall_at_fpr_resampled(
    y: np.ndarray, scores: np.ndarray, groups: np.ndarray, target_fpr: float, counts: np.ndarray
) -> np.ndarray:
    """:func:`recall_at_fpr` of each resample of whole groups (GPUs) of the rows.

    ``counts`` is (B, G): how many times resample b draws group g (``groups`` indexes 0..G-1
    per row). A group drawn c times counts its rows c times, benign and mining alike, exactly
    as if they were repeated; with every count 1 the figure is :func:`recall_at_fpr`'s.
    NaN for a resample with no mining or no benign row.
    """
    y = np.asarray(y)
    s = np.asarray(scores, dtype=np.float32)
    g = np.asarray(groups)
    counts = np.asarray(counts, dtype=np.int64)
    neg_order = np.argsort(-s[y == 0], kind="stable")
    neg, neg_g = s[y == 0][neg_order], g[y == 0][neg_order]
    pos_order = np.argsort(s[y == 1], kind="stable")
    pos, pos_g = s[y == 1][pos_order], g[y == 1][pos_order]
    out = np.full(len(counts), np.nan)
    for b, c in enumerate(counts):
        wn, wp = c[neg_g], c[pos_g]
        cn = np.cumsum(wn)
        if len(cn) == 0 or cn[-1] == 0 or wp.sum() == 0:
            continue
        # as calibrate_threshold: at most floor(target * negatives) benign rows at or above
        k = int(np.floor(target_fpr * cn[-1] + 1e-9))
        j = int(np.searchsorted(cn, k, side="right"))  # the (k+1)-th highest benign row
        t = np.nextafter(neg[j], np.float32(np.inf))
        first = int(np.searchsorted(pos, t, side="left"))
        out[b] = wp[first:].sum() / wp.sum()
    return out


def recall_at_fpr_interval(
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    target_fpr: float,
    n_boot: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """``n_boot`` bootstrap replicates of :func:`recall_at_fpr`, resampling whole GPUs.

    At a target FPR of 0.1% the threshold is set by the few most miner-like benign rows, often
    one benign episode on one GPU, so the figure moves with which GPUs a test fleet holds;
    the spread of the replicates shows by how much. Rows of one GPU are resampled together
    (they are not independent samples).
    """
    _, gid = np.unique(np.asarray(groups), return_inverse=True)
    n = int(gid.max()) + 1 if len(gid) else 0
    if n == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    return recall_at_fpr_resampled(y, scores, gid, target_fpr, counts)


def recall_at_fpr_gain(
    y: np.ndarray,
    base: np.ndarray,
    other: np.ndarray,
    groups: np.ndarray,
    target_fpr: float,
    n_boot: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired 95% interval of ``recall_at_fpr(other) - recall_at_fpr(base)`` on the same rows.

    Both score vectors are resampled with the same whole GPUs (:func:`recall_at_fpr_interval`
    with one seed draws the same counts), so what the two share (which benign episode sets the
    threshold, which miners the fleet holds) cancels. ``(nan, nan)`` when no resample has
    both classes.
    """
    a = recall_at_fpr_interval(y, base, groups, target_fpr, n_boot, seed)
    b = recall_at_fpr_interval(y, other, groups, target_fpr, n_boot, seed)
    d = (b - a)[np.isfinite(b - a)]
    if len(d) == 0:
        return math.nan, math.nan
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def gpu_folds(ds: Dataset, k: int, seed: int = 0) -> list[np.ndarray]:
    """Row indices of ``k`` folds of whole GPUs (GPUs that mined and those that never did are
    dealt out separately, so every fold with enough GPUs holds both classes)."""
    rng = np.random.default_rng(seed)
    gpus = np.unique(ds.gpu)
    mined = {g for g in gpus if ds.y[ds.gpu == g].any()}
    fold_of: dict[str, int] = {}
    for group in (sorted(mined), sorted(set(gpus) - mined)):
        for i, g in enumerate(rng.permutation(group)):
            fold_of[str(g)] = i % k
    f = np.array([fold_of[str(g)] for g in ds.gpu])
    return [np.flatnonzero(f == i) for i in range(k)]


def oof_threshold(
    ds: Dataset,
    fit: Callable[[Dataset], Callable[[Dataset], np.ndarray]],
    target_fpr: float,
    folds: int = 3,
    seed: int = 0,
    split_na: bool = False,
    repeats: int = 1,
) -> tuple[float, dict[str, float]]:
    """A threshold for ``target_fpr`` from out-of-fold scores over whole GPUs.

    ``fit(train)`` returns a scorer; each fold's GPUs are scored by a model that never saw
    them, so every benign row of ``ds`` takes part (one held-out split of a few GPUs gave a
    threshold that depended on those few boards). With ``split_na`` rows whose utilisation
    reads N/A get their own threshold (``info["na_threshold"]``, see :func:`rescale_na`) when
    both regimes have benign rows and theirs is the stricter one.

    With ``repeats`` > 1 the GPUs are dealt into folds ``repeats`` times (fold seeds ``seed``,
    ``seed + 100``, ...) and the threshold is chosen over the out-of-fold scores of every draw
    together. At 0.1% FPR one draw's threshold is set by the one or two benign episodes that
    land in a fold without their kind of board, so it moved with the fold draw alone (see
    :class:`TrainParams`); ``info`` keeps the lowest and highest single-draw threshold.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    ys, ss, nas, draws = [], [], [], []
    for r in range(repeats):
        scores = _oof_scores(ds, fit, folds, seed + 100 * r)
        ok = np.isfinite(scores)
        ys.append(ds.y[ok])
        ss.append(scores[ok])
        nas.append(util_na(ds.X[ok]) if split_na else np.zeros(int(ok.sum()), dtype=bool))
        draws.append(_regime_thresholds(ys[-1], ss[-1], nas[-1], target_fpr)[0])
    y, s, na = np.concatenate(ys), np.concatenate(ss), np.concatenate(nas)
    threshold, extra = _regime_thresholds(y, s, na, target_fpr)
    if "na_threshold" in extra:
        s = rescale_na(s, na, threshold, extra["na_threshold"])
    pred = s >= threshold
    return threshold, {
        "threshold": threshold,
        **extra,
        "target_fpr": target_fpr,
        "repeats": float(repeats),
        "threshold_draw_min": float(min(draws)),
        "threshold_draw_max": float(max(draws)),
        "val_rows": float(len(y) / repeats),
        "val_fpr": float(pred[y == 0].mean()) if (y == 0).any() else math.nan,
        "val_recall": float(pred[y == 1].mean()) if (y == 1).any() else math.nan,
    }


def _regime_thresholds(
    y: np.ndarray, s: np.ndarray, na: np.ndarray, target_fpr: float
) -> tuple[float, dict[str, float]]:
    """The shared threshold, plus ``na_threshold`` for the ``na`` rows when both regimes have
    benign rows and theirs is the stricter one."""
    threshold = calibrate_threshold(y, s, target_fpr)
    if (y[na] == 0).any() and (y[~na] == 0).any():
        # only ever stricter for the N/A rows: a few MIG boards' benign rows are too small a
        # sample to loosen a threshold on, but enough to show they would take the budget
        readable = calibrate_threshold(y[~na], s[~na], target_fpr)
        na_threshold = calibrate_threshold(y[na], s[na], target_fpr)
        if na_threshold > readable:
            return readable, {"na_threshold": na_threshold}
    return threshold, {}


def _oof_scores(
    ds: Dataset, fit: Callable[[Dataset], Callable[[Dataset], np.ndarray]], folds: int, seed: int
) -> np.ndarray:
    """Each row scored by a model fitted without its GPU's fold (NaN where a fold's training
    part held one class only)."""
    scores = np.full(len(ds), np.nan, dtype=np.float32)
    for part in (p for p in gpu_folds(ds, folds, seed) if len(p)):
        train_part = ds.subset(np.setdiff1d(np.arange(len(ds)), part))
        if len(np.unique(train_part.y)) < 2:
            continue
        scores[part] = fit(train_part)(ds.subset(part))
    return scores


def util_na(X: np.ndarray) -> np.ndarray:
    """Rows whose utilisation reads N/A (MIG boards): a regime with its own threshold."""
    return np.isnan(np.asarray(X)[:, _UTIL_COL])


def rescale_na(s: np.ndarray, na: np.ndarray, threshold: float, na_threshold: float) -> np.ndarray:
    """Scores with the ``na`` rows mapped monotonically so ``na_threshold`` lands on ``threshold``.

    With utilisation N/A (MIG) a row has only memory, power and temperature to go on, and its
    scores sit on their own scale: one MIG board running an unfamiliar benign job could take a
    shared threshold's whole FPR budget. Each regime gets a threshold for the target FPR on
    out-of-fold GPUs; the N/A rows are mapped piecewise-linearly ``[0, t_na] -> [0, t]``,
    ``[t_na, 1] -> [t, 1]``, so one threshold ``t`` keeps each regime's FPR at the target.
    """
    out = np.asarray(s, dtype=np.float32).copy()
    if not na.any():
        return out
    x = out[na].astype(np.float64)
    t, tn = float(threshold), float(na_threshold)
    low = x * t / tn if tn > 0 else np.zeros_like(x)
    high = t + (x - tn) * (1 - t) / (1 - tn) if tn < 1 else np.full_like(x, t)
    above = x >= tn
    y = np.where(above, high, low).astype(np.float32)
    t32 = np.float32(t)
    # float32 rounding must not move a row across the threshold
    y = np.where(above, np.maximum(y, t32), np.minimum(y, np.nextafter(t32, np.float32(0))))
    out[na] = y
    return out


def fit_calibrated(
    ds: Dataset,
    params: TrainParams,
    target_fpr: float,
    folds: int = 3,
    evals: Dataset | None = None,
) -> tuple[xgb.Booster, dict[str, float]]:
    """Train on ``ds``; choose its threshold for ``target_fpr`` on out-of-fold GPUs.

    The threshold (lowest score whose FPR over the out-of-fold scores of every training GPU is
    <= ``target_fpr``, over ``params.calibration_repeats`` fold draws together) is stored with
    the booster (``threshold``, ``target_fpr`` attributes) and used wherever it scores; rows
    whose utilisation reads N/A get their own (``na_threshold``), applied by :func:`score`
    through :func:`rescale_na`. Costs ``folds * calibration_repeats`` extra trainings.
    """

    def fit(train_ds: Dataset) -> Callable[[Dataset], np.ndarray]:
        b = train(train_ds, params)
        return lambda d: score_dataset(b, d)

    threshold, info = oof_threshold(
        ds, fit, target_fpr, folds, params.seed + 1, split_na=True,
        repeats=params.calibration_repeats,
    )  # fmt: skip
    booster = train(ds, params, evals=evals)
    booster.set_attr(threshold=repr(threshold), target_fpr=repr(target_fpr))
    if "na_threshold" in info:
        booster.set_attr(na_threshold=repr(info["na_threshold"]))
    return booster, info


def booster_threshold(booster: xgb.Booster) -> float:
    """The decision threshold stored with the booster (calibrated, else the default)."""
    attr = booster.attr("threshold")
    return float(attr) if attr else DEFAULT_THRESHOLD


def predict(
    booster: xgb.Booster, records: Sequence[Any], threshold: float = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """(mining 0/1, score) for raw nvidia-smi records (in order; each GPU's history read from
    these records alone, as a fresh run of the batch pipeline reads them)."""
    records = list(records)
    uuids = [r.get(UUID_KEY) if isinstance(r, dict) else None for r in records]
    s = score(booster, to_matrix(records), uuids)
    return (s >= threshold).astype(np.int8), s


def save_booster(booster: xgb.Booster) -> bytes:
    """The booster as UBJSON bytes (feature names and attributes included)."""
    return bytes(booster.save_raw("ubj"))


def load_booster(path_or_bytes: str | bytes | bytearray) -> xgb.Booster:
    """Load a booster saved by xgboost (file path or raw bytes)."""
    booster = xgb.Booster()
    booster.load_model(
        bytearray(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    )
    return booster


# ---------------------------------------------------------------- evaluate


def evaluate(
    y: np.ndarray,
    scores: np.ndarray,
    profiles: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    target_fpr: float = 0.001,
) -> dict[str, float]:
    """Precision, recall, F1, ROC AUC, confusion counts and per-profile detection rates.

    ``recall_<profile>`` is the share of a mining profile's rows flagged; for benign
    profiles ``specificity_<profile>`` is the share correctly left alone.
    """
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y).astype(int)
    pred = (np.asarray(scores) >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    m: dict[str, float] = {
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else math.nan,
        "pr_auc": (
            float(average_precision_score(y, scores)) if len(np.unique(y)) == 2 else math.nan
        ),
        "fpr": float(fp / max(1, fp + tn)),
        "threshold": float(threshold),
        "target_fpr_recall": recall_at_fpr(y, scores, target_fpr),  # recall at FPR <= target
        "accuracy": float((tp + tn) / max(1, len(y))),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
        "rows": len(y),
    }
    for prof in sorted(set(profiles.tolist())):
        mask = profiles == prof
        flagged = float(pred[mask].mean())
        if prof in MINING_PROFILES:
            m[f"recall_{prof}"] = flagged
        else:
            m[f"specificity_{prof}"] = 1.0 - flagged
        m[f"rows_{prof}"] = int(mask.sum())
    return m


def plots(
    booster: xgb.Booster, y: np.ndarray, scores: np.ndarray, metrics: dict[str, float]
) -> dict[str, Any]:
    """Matplotlib figures (Agg): confusion matrix, ROC curve, feature importance, per profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    figs: dict[str, Any] = {}
    fig, ax = plt.subplots(figsize=(4, 4))
    cm = np.array([[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]])
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(int(v)), ha="center", va="center")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["benign", "mining"],
        yticklabels=["benign", "mining"],
        xlabel="predicted",
        ylabel="actual",
        title="confusion matrix",
    )
    figs["confusion_matrix.png"] = fig
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, scores)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr, label=f"AUC {metrics['roc_auc']:.4f}")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        ax.legend(loc="lower right")
        figs["roc_curve.png"] = fig
    cols = booster_features(booster)
    gain = {_feature_name(k, cols): v for k, v in booster.get_score(importance_type="gain").items()}
    if gain:
        names = sorted(gain, key=gain.get)
        fig, ax = plt.subplots(figsize=(7, 5))
        ax.barh([n.removeprefix("nvidia_smi_log.gpu.") for n in names], [gain[n] for n in names])
        ax.set(title="feature importance (gain)")
        fig.tight_layout()
        figs["feature_importance.png"] = fig
    rates = {k: v for k, v in metrics.items() if k.startswith(("recall_", "specificity_"))}
    if rates:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.barh(list(rates), list(rates.values()))
        ax.set(xlim=(0, 1), title="per-profile detection (recall) / specificity")
        fig.tight_layout()
        figs["per_profile.png"] = fig
    return figs


def _feature_name(key: str, names: Sequence[str] = MODEL_FEATURES) -> str:
    """Map xgboost's ``f<i>`` to the column's name (nvidia-smi field or derived ratio)."""
    if key.startswith("f") and key[1:].isdigit() and int(key[1:]) < len(names):
        return names[int(key[1:])]
    return key
