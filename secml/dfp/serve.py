"""DFP scoring as served by Triton's ``dfp`` model: every user of every source in one model.

The typed contract: the gateway featurizes records with the one featurizer
(``schema.extract_columns`` + ``history.featurize_columns``, ``featurize`` below) and sends one
row per event in scoring order (time, user, event id): ``USER`` (BYTES), ``CATEGORICAL``
(BYTES, the source's categorical features), ``NUMERIC`` (FP64), ``BINARY`` (FP32 0/1) and
``RISK_INPUTS`` (FP64, the risk model's history inputs). The model groups rows by the model
that scores each user (their own production model, else the generic one) and runs one forward
per group (``DfpScorer.score_arrays``); it answers per row ``MODEL`` (``name:version``), ``Z``
(absolute z per feature), the reconstructions ``PRED_*``, ``STATS`` (``STATS`` columns),
``ANOMALY`` and ``CONTRIB`` (the risk model's contributions, anomalies only). ``answers``
turns them into the gateway's per-record answers, equal to ``dfp_results`` of the batch
pipeline's frame for the same events.

Per-user autoencoders come from the files ``serving.sync`` writes under ``users/`` (layout in
``secml.repository``) and live in an LRU cache; a user without a production model of their own
is scored by the generic model. Imported by the Triton model (numpy 1.26 environment), the
gateway, and tests and benchmarks in-process.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from secml.dfp.history import FEATURE_COLUMNS, UserState, featurize_columns
from secml.dfp.schema import COUNT_FEATURES, FEATURES, Events, extract_columns
from secml.repository import NotSyncedError, read_hot, read_index, user_model_dir

TOP_FEATURES = 3
# the typed Triton contract of the ``dfp`` model
SOURCE = "SOURCE"
USER = "USER"
CATEGORICAL = "CATEGORICAL"
NUMERIC = "NUMERIC"
BINARY = "BINARY"
RISK_INPUTS = "RISK_INPUTS"
MODEL = "MODEL"
Z = "Z"
PRED_CATEGORICAL = "PRED_CATEGORICAL"
PRED_NUMERIC = "PRED_NUMERIC"
PRED_BINARY = "PRED_BINARY"
STATS = "STATS"
ANOMALY = "ANOMALY"
CONTRIB = "CONTRIB"
OUTPUTS = (MODEL, Z, PRED_CATEGORICAL, PRED_NUMERIC, PRED_BINARY, STATS, ANOMALY, CONTRIB)
STAT_COLUMNS = ("mean_abs_z", "max_abs_z", "ae_surprisal", "risk", "risk_threshold")
# the risk model's inputs (secml.dfp.scoring.RISK_INPUTS) but the autoencoder's surprisal
HISTORY_RISK = (
    "hour_gap",
    "new_country",
    "new_device",
    "new_browser_os",
    "new_app",
    "fails_recent",
    "log_speed",
    "history_depth",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Featurized:
    """Events featurized for the model, rows in scoring order (time, user, event id):
    ``order[k]`` is the record behind row ``k``."""

    source: str
    order: np.ndarray
    users: list[str]
    categorical: np.ndarray  # object (rows x categorical features)
    numeric: np.ndarray  # float64 (rows x numeric features)
    binary: np.ndarray  # float32 0/1 (rows x binary features)
    risk_inputs: np.ndarray  # float64 (rows x HISTORY_RISK)
    ns: np.ndarray
    country: list[str]

    def __len__(self) -> int:
        """Number of events."""
        return len(self.users)


def featurize(events: Events, states: MutableMapping[str, UserState] | None = None) -> Featurized:
    """The model's inputs for ``events`` (``schema.extract_columns``), history features from
    ``states`` (updated in place), rows sorted as ``schema.derive_features`` sorts them."""
    source, n, c = events.source, len(events), events.columns
    users, ids, ns = c["username"], events.event_ids, events.ns.tolist()
    order = sorted(range(n), key=lambda i: (ns[i], users[i], ids[i]))
    cols = {k: [v[i] for i in order] for k, v in c.items()}
    ns_sorted = events.ns[order]
    hist = featurize_columns(ns_sorted, cols, source, states, events.unit)
    h = {f: hist[:, j] for j, f in enumerate(FEATURE_COLUMNS)}
    spec = FEATURES[source]
    categorical = np.empty((n, len(spec.categorical)), dtype=object)
    for j, f in enumerate(spec.categorical):
        categorical[:, j] = cols[f]
    numeric = np.zeros((n, len(spec.numeric)), dtype=np.float64)
    for j, f in enumerate(spec.numeric):
        numeric[:, j] = h[f]
    binary = np.zeros((n, len(spec.binary)), dtype=np.float32)
    for j, f in enumerate(spec.binary):
        binary[:, j] = np.asarray(cols[f], dtype=bool) if f in cols else h[f] != 0
    risk = np.zeros((n, len(HISTORY_RISK)), dtype=np.float64)
    for j, f in enumerate(HISTORY_RISK):
        risk[:, j] = h[f] if f not in spec.binary else (h[f] != 0)
    return Featurized(
        source,
        np.asarray(order, dtype=np.int64),
        [str(u) for u in cols["username"]],
        categorical,
        numeric,
        binary,
        risk,
        ns_sorted,
        cols["country"],
    )


def _synced_registry_class() -> type:
    """Build the SyncedRegistry class lazily (imports torch only when DFP is served)."""
    from secml.dfp.model import AutoEncoder, find_model_dir
    from secml.dfp.registry import ModelRegistry

    class SyncedRegistry(ModelRegistry):
        """secml's DFP ModelRegistry reading the synced index and files instead of MLflow."""

        def __init__(self, dfp_dir: Path, source: str, **kw: Any) -> None:
            self.dfp_dir = Path(dfp_dir)
            super().__init__(source, tracking_uri="unused", loader=self._load_synced, **kw)

        def _fetch_listing(self) -> dict[str, str]:
            prefix = f"dfp-{self.source}-"
            return {k: v for k, v in read_index(self.dfp_dir).items() if k.startswith(prefix)}

        def _load_synced(self, name: str, version: str) -> AutoEncoder:
            d = user_model_dir(self.dfp_dir, name, version)
            return AutoEncoder.load(find_model_dir(d), device=self.device)

    return SyncedRegistry


class DfpScorer:
    """Scores DFP records of any source with the synced per-user models (LRU inside)."""

    def __init__(
        self,
        dfp_dir: Path,
        threshold: float = 2.0,
        cache_size: int = 256,
        ttl_s: float = 2.0,
        device: str = "auto",
    ) -> None:
        """Serve the models synced under ``dfp_dir``; refresh the index at most every ttl_s."""
        self.dfp_dir = Path(dfp_dir)
        self.threshold = threshold
        self.cache_size = cache_size
        self.ttl_s = ttl_s
        self.device = device
        self._registries: dict[str, Any] = {}
        self._lock = threading.Lock()

    def registry(self, source: str) -> Any:
        """The synced registry of ``source`` (created on first use)."""
        with self._lock:
            if source not in self._registries:
                cls = _synced_registry_class()
                self._registries[source] = cls(
                    self.dfp_dir,
                    source,
                    ttl_s=self.ttl_s,
                    cache_size=self.cache_size,
                    device=self.device,
                )
            return self._registries[source]

    def warm(self, sources: tuple[str, ...] = ("duo", "azure")) -> list[str]:
        """Import the scoring code and load each source's generic model now (not on a request)."""
        from secml.dfp import infer, schema  # noqa: F401 - imported for their import cost
        from secml.naming import GENERIC_USER, user_to_model_name

        loaded = []
        for source in sources:
            registry = self.registry(source)
            listing = registry.production_models(force=True)
            generic = user_to_model_name(source, GENERIC_USER)
            if generic in listing:
                registry.load(generic, listing[generic])
                loaded.append(f"{generic}:{listing[generic]}")
        return loaded

    def preload(self) -> list[str]:
        """Load the models of the most recently active users (``users/hot.json``, written by
        sync) that are not loaded yet, at most the LRU size, so their requests find them
        resident (after a restart, and after sync swaps in new versions). Returns what it
        loaded (``name:version``)."""
        listing = read_index(self.dfp_dir)
        hot = [m for m in read_hot(self.dfp_dir) if m in listing][: self.cache_size]
        loaded = []
        for name in reversed(hot):  # the most recent last: the most recently used in the LRU
            source = name.split("-", 2)[1]
            registry = self.registry(source)
            version = listing[name]
            if (name, version) not in set(registry.cached()):
                registry.load(name, version)
                loaded.append(f"{name}:{version}")
        return loaded

    def score_records(
        self,
        records: list[Mapping[str, Any]],
        source: str,
        states: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """One result per record, in input order (the gateway's path, in one process).

        ``states`` maps user to ``secml.dfp.history.UserState``: what each user did before
        these records (empty when None); it is updated in place, so the caller can store it.
        """
        feats = featurize(extract_columns(records, source), states)
        out = self.score_arrays(
            source, feats.users, feats.categorical, feats.numeric, feats.binary,
            feats.risk_inputs,
        )  # fmt: skip
        return answers(feats, out, self.threshold)

    def score_arrays(
        self,
        source: str,
        users: Sequence[str],
        categorical: np.ndarray,
        numeric: np.ndarray,
        binary: np.ndarray,
        risk_inputs: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """The ``OUTPUTS`` of featurized rows (``Featurized``'s arrays): one forward per model
        that scores some of the users, rows grouped as ``infer.score_events`` groups them."""
        from secml.dfp.registry import NoModelError
        from secml.naming import GENERIC_USER

        spec = FEATURES[source]
        n = len(users)
        if not (len(categorical) == len(numeric) == len(binary) == len(risk_inputs) == n):
            raise ValueError(f"DFP inputs disagree on the number of rows ({n} users)")
        registry = self.registry(source)
        rows: dict[str, list[int]] = {}
        for k, user in enumerate(users):
            rows.setdefault(user, []).append(k)
        groups: dict[str, list[int]] = {}
        models: dict[str, Any] = {}
        try:
            for user, ks in rows.items():
                model, label = registry.model_for_user(user)
                models[label] = model
                groups.setdefault(label, []).extend(ks)
            risk = registry.model_for_user(GENERIC_USER)[0].risk
        except NoModelError as exc:
            raise NotSyncedError(f"DFP {source} ({exc})") from exc
        feats = spec.all
        z = np.full((n, len(feats)), np.nan)
        pred_cat = np.full((n, len(spec.categorical)), b"", dtype=object)
        pred_num = np.full((n, len(spec.numeric)), np.nan)
        pred_bin = np.zeros((n, len(spec.binary)), dtype=bool)
        stats = np.full((n, len(STAT_COLUMNS)), np.nan)
        labels = np.empty((n, 1), dtype=object)
        whole: list[tuple[np.ndarray, _Plan, tuple, Any]] = []  # models reading every feature
        for label, ks in groups.items():
            idx = np.asarray(ks, dtype=np.int64)
            ae = models[label]
            plan = _plan(ae, source, label)
            labels[idx, 0] = plan.label
            if plan.whole:  # one forward; z-scores and reconstructions below, in one pass
                x = ae.encode_arrays(
                    numeric[idx], binary[idx], [categorical[idx, j] for j in plan.ci]
                )
                whole.append((idx, plan, ae.forward_losses(x), ae))
                continue
            x = ae.encode_arrays(
                numeric[np.ix_(idx, plan.ni)],
                binary[np.ix_(idx, plan.bi)],
                [categorical[idx, j] for j in plan.ci],
            )
            got = ae.score_tensors(x)
            z[np.ix_(idx, plan.fi)] = got.z
            for j, f in zip(plan.ci, ae.config.categorical, strict=True):
                pred_cat[idx, j] = [str(v).encode() for v in got.preds[f]]
            for j, f in zip(plan.ni, ae.config.numeric, strict=True):
                pred_num[idx, j] = got.preds[f]
            for j, f in zip(plan.bi, ae.config.binary, strict=True):
                pred_bin[idx, j] = got.preds[f]
            stats[idx, 0] = got.mean_abs_z
            stats[idx, 1] = got.max_abs_z
            stats[idx, 2] = ae.surprisal(got.mean_abs_z)
        if whole:
            _score_whole(whole, z, pred_cat, pred_num, pred_bin, stats)
        contrib = np.zeros((n, len(HISTORY_RISK) + 1), dtype=np.float32)
        if risk is None:
            anomaly = stats[:, 0] > self.threshold
        else:
            frame = pd.DataFrame(
                {**dict(zip(HISTORY_RISK, risk_inputs.T, strict=True)), "ae_surprisal": stats[:, 2]}
            )
            stats[:, 3] = risk.score(frame)
            stats[:, 4] = risk.threshold
            anomaly = stats[:, 3] > risk.threshold
            if anomaly.any():
                contrib[anomaly] = risk.contributions(frame[anomaly])
        return {
            MODEL: labels,
            Z: z,
            PRED_CATEGORICAL: pred_cat,
            PRED_NUMERIC: pred_num,
            PRED_BINARY: pred_bin,
            STATS: stats,
            ANOMALY: anomaly.reshape(-1, 1),
            CONTRIB: contrib,
        }


@dataclass
class _Plan:
    """How one model's features sit among its source's (``FEATURES[source]``), and what
    serving reads of the model on every request, built once per loaded model."""

    ci: list[int]  # the model's categorical features' columns in CATEGORICAL
    ni: list[int]
    bi: list[int]
    fi: list[int]  # the model's features (``AutoEncoder.features``) in ``spec.all``
    whole: bool  # the model reads every feature of its source, in the source's order
    loss_mean: np.ndarray
    loss_std: np.ndarray
    num_mean: np.ndarray
    num_std: np.ndarray
    categories: list[np.ndarray]  # per categorical feature: code -> UTF-8 category
    label: bytes  # ``name:version`` (UTF-8)


_plans: weakref.WeakKeyDictionary[Any, dict[str, _Plan]] = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()


def _plan(ae: Any, source: str, label: str) -> _Plan:
    """The serving plan of model ``ae`` (``label``: ``name:version``) for ``source``, cached
    while the model is loaded."""
    with _plans_lock:
        per = _plans.setdefault(ae, {})
        plan = per.get(source)
    if plan is not None:
        return plan
    spec = FEATURES[source]
    cfg = ae.config
    try:
        ci = [spec.categorical.index(f) for f in cfg.categorical]
        ni = [spec.numeric.index(f) for f in cfg.numeric]
        bi = [spec.binary.index(f) for f in cfg.binary]
        fi = [spec.all.index(f) for f in ae.features]
    except ValueError as exc:
        raise ValueError(f"model {label} reads a feature {source} lacks: {exc}") from exc
    mean, std = ae._loss_scale()  # noqa: SLF001 - the model's own cached loss scale
    plan = _Plan(
        ci,
        ni,
        bi,
        fi,
        fi == list(range(len(spec.all))),
        mean,
        std,
        np.array([ae.num_mean[c] for c in cfg.numeric], dtype=np.float64),
        np.array([ae.num_std[c] for c in cfg.numeric], dtype=np.float64),
        [
            np.array([str(v).encode() for v in ae.categories[c]], dtype=object)
            for c in cfg.categorical
        ],
        label.encode(),
    )
    with _plans_lock:
        _plans.setdefault(ae, {})[source] = plan
    return plan


def _score_whole(
    parts: list[tuple[np.ndarray, _Plan, tuple, Any]],
    z: np.ndarray,
    pred_cat: np.ndarray,
    pred_num: np.ndarray,
    pred_bin: np.ndarray,
    stats: np.ndarray,
) -> None:
    """Fill the outputs' rows of models that read every feature from their forwards
    (``AutoEncoder.forward_losses``): the arithmetic of ``AutoEncoder.score_tensors``, element
    for element, over every model's rows at once."""
    sizes = [len(p[0]) for p in parts]
    rows = np.concatenate([p[0] for p in parts])
    plans = [p[1] for p in parts]
    outs = [p[2] for p in parts]
    loss = np.concatenate([out[0] for out in outs]).astype(np.float64)
    mean = np.repeat(np.stack([p.loss_mean for p in plans]), sizes, axis=0)
    std = np.repeat(np.stack([p.loss_std for p in plans]), sizes, axis=0)
    zs = np.abs(loss - mean) / std
    z[rows] = zs
    if pred_num.shape[1]:
        num = np.concatenate([out[1] for out in outs]).astype(np.float64)
        nstd = np.repeat(np.stack([p.num_std for p in plans]), sizes, axis=0)
        nmean = np.repeat(np.stack([p.num_mean for p in plans]), sizes, axis=0)
        pred_num[rows] = num * nstd + nmean
    if pred_bin.shape[1]:
        pred_bin[rows] = np.concatenate([out[2] for out in outs])
    mean_z = zs.mean(axis=1)
    stats[rows, 0] = mean_z
    stats[rows, 1] = zs.max(axis=1)
    start = 0
    for (idx, plan, out, ae), k in zip(parts, sizes, strict=True):
        codes = out[3]
        for j, values in enumerate(plan.categories):
            pred_cat[idx, j] = values[codes[:, j]]
        stats[idx, 2] = ae.surprisal(mean_z[start : start + k])
        start += k


def score_dfp_events(events: pd.DataFrame, source: str, registry: Any) -> pd.DataFrame:
    """secml's own DFP scoring of processed events with ``registry``'s models."""
    from secml.dfp.infer import score_events

    return score_events(events, source, registry=registry)


def dfp_results(
    scored: pd.DataFrame, source: str, threshold: float, n: int
) -> list[dict[str, Any]]:
    """Per-record answers in the original record order (``_index``), top features included."""
    from secml.dfp.schema import FEATURES
    from secml.dfp.scoring import risk_details

    feats = FEATURES[source].all
    out: list[dict[str, Any] | None] = [None] * n
    for row in scored.to_dict("records"):
        zs = sorted(
            ((f, float(row[f"{f}_z_loss"])) for f in feats if f"{f}_z_loss" in row),
            key=lambda t: -t[1],
        )
        top = [
            {
                "feature": f,
                "z": _clean(z),
                "value": _plain(row.get(f)),
                "expected": _plain(row.get(f"{f}_pred")),
            }
            for f, z in zs[:TOP_FEATURES]
        ]
        name, _, version = str(row["model_version"]).rpartition(":")
        mean_z = float(row["mean_abs_z"])
        risk = float(row.get("risk", math.nan))
        has_risk = not math.isnan(risk)
        ts = row.get("timestamp")
        out[int(row["_index"])] = {
            "score": _clean(risk if has_risk else mean_z),
            "anomaly": bool(row["anomaly"]) if "anomaly" in row else bool(mean_z > threshold),
            "model": name,
            "version": version,
            "top_features": top,
            "details": {
                "mean_abs_z": _clean(mean_z),
                "max_abs_z": _clean(float(row["max_abs_z"])),
                "threshold": threshold,
                **risk_details(row),
            },
            "user": str(row["username"]),
            "event_time": None if ts is None else pd.Timestamp(ts).isoformat(),
        }
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise RuntimeError(f"DFP scoring lost records {missing[:10]}")
    return out  # type: ignore[return-value]


def answers(feats: Featurized, out: Mapping[str, Any], threshold: float) -> list[dict[str, Any]]:
    """Per-record answers (in record order) from the ``dfp`` model's ``OUTPUTS`` for rows
    ``feats``: the same dicts as ``dfp_results`` of the batch frame; ``threshold`` is the
    ``mean_abs_z`` threshold (reported when the generic model has no risk model)."""
    from secml.dfp.scoring import RISK_INPUTS as RISK_ORDER
    from secml.dfp.scoring import explain, risk_details

    n = len(feats)
    spec = FEATURES[feats.source]
    names = spec.all
    labels = np.asarray(out[MODEL]).reshape(-1)
    z = np.asarray(out[Z], dtype=np.float64).reshape(n, len(names))
    pred_cat = np.asarray(out[PRED_CATEGORICAL]).reshape(n, len(spec.categorical))
    pred_num = np.asarray(out[PRED_NUMERIC], dtype=np.float64).reshape(n, len(spec.numeric))
    pred_bin = np.asarray(out[PRED_BINARY]).reshape(n, len(spec.binary))
    stats = np.asarray(out[STATS], dtype=np.float64).reshape(n, len(STAT_COLUMNS))
    anomaly = np.asarray(out[ANOMALY]).reshape(-1).astype(bool)
    contrib = np.asarray(out[CONTRIB], dtype=np.float32).reshape(n, len(RISK_ORDER))
    if not len(labels) == n:
        raise ValueError(f"DFP model returned {len(labels)} results for {n} events")
    results: list[dict[str, Any] | None] = [None] * n
    values = _values(feats)
    expected = _expected(spec, pred_cat, pred_num, pred_bin)
    order, users, ns = feats.order.tolist(), feats.users, feats.ns.tolist()
    risk_in = feats.risk_inputs.tolist()
    flagged = [k for k in np.flatnonzero(anomaly).tolist() if not math.isnan(stats[k, 3])]
    why: dict[int, tuple[list[dict[str, Any]], str]] = {}
    if flagged:  # one frame for every anomaly: their risk contributions in words
        frame = pd.DataFrame(
            {
                **dict(zip(HISTORY_RISK, feats.risk_inputs[flagged].T, strict=True)),
                "ae_surprisal": stats[flagged, 2],
                "country": [feats.country[k] for k in flagged],
            }
        )
        why = dict(zip(flagged, explain(frame, contrib[flagged]), strict=True))
    for k, (zk, sk, vk, ek) in enumerate(
        zip(z.tolist(), stats.tolist(), values, expected, strict=True)
    ):
        mean_z, max_z, surprisal, risk, risk_thr = sk
        history = dict(zip(HISTORY_RISK, risk_in[k], strict=True))
        row: dict[str, Any] = {
            **history,
            "risk": risk,
            "risk_threshold": risk_thr,
            "ae_surprisal": surprisal,
            "reasons": "",
            "risk_top": [],
        }
        if k in why:
            row["risk_top"], row["reasons"] = why[k]
        zs = sorted(
            ((j, v) for j, v in enumerate(zk) if v == v),  # NaN: a feature the model lacks
            key=lambda t: -t[1],
        )
        top = [
            {
                "feature": names[j],
                "z": _clean(v),
                "value": _plain(vk[j]),
                "expected": _plain(ek[j]),
            }
            for j, v in zs[:TOP_FEATURES]
        ]
        label = labels[k].decode() if isinstance(labels[k], bytes) else str(labels[k])
        name, _, version = label.rpartition(":")
        results[order[k]] = {
            "score": _clean(mean_z if math.isnan(risk) else risk),
            "anomaly": bool(anomaly[k]),
            "model": name,
            "version": version,
            "top_features": top,
            "details": {
                "mean_abs_z": _clean(mean_z),
                "max_abs_z": _clean(max_z),
                "threshold": threshold,
                **risk_details(row),
            },
            "user": users[k],
            "event_time": iso_time(ns[k]),
        }
    return results  # type: ignore[return-value]


def _values(feats: Featurized) -> list[list[Any]]:
    """Every row's feature values (``FEATURES[source].all`` order) as the batch frame holds
    them: str categories, int counts, float numbers, bool binaries."""
    spec = FEATURES[feats.source]
    counts = [f in COUNT_FEATURES for f in spec.numeric]
    nums = [
        [int(v) if c else v for v, c in zip(row, counts, strict=True)]
        for row in feats.numeric.tolist()
    ]
    bins = (feats.binary != 0).tolist()
    cats = feats.categorical.tolist()
    return [c + m + b for c, m, b in zip(cats, nums, bins, strict=True)]


def _expected(spec: Any, cat: np.ndarray, num: np.ndarray, binary: np.ndarray) -> list[list[Any]]:
    """Every row's reconstructions (``spec.all`` order): str, float, bool."""
    cats = [[v.decode() if isinstance(v, bytes) else str(v) for v in r] for r in cat.tolist()]
    bins = binary.astype(bool).tolist()
    return [c + m + b for c, m, b in zip(cats, num.tolist(), bins, strict=True)]


def iso_time(ns: int) -> str:
    """ISO 8601 text of epoch ns, as ``pd.Timestamp.isoformat`` writes it."""
    if ns % 1000:
        return pd.Timestamp(ns, tz="UTC").isoformat()
    return (_EPOCH + timedelta(microseconds=ns // 1000)).isoformat()


def _clean(v: float) -> float:
    """Finite float for JSON (inf/NaN become a large sentinel / 0)."""
    if math.isnan(v):
        return 0.0
    if math.isinf(v):
        return 1e308 if v > 0 else -1e308
    return v


def _plain(v: Any) -> Any:
    """A JSON-ready scalar from numpy/pandas values."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return _clean(v)
    return v
