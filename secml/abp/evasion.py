"""Evasion search against the ABP mining detector: how much hash rate must a miner give up?

A miner controls its GPU through the driver: a power limit (``nvidia-smi -pl``, within the
board's minimum and maximum limit), locked core and memory clocks (``-lgc``/``-lmc``, up to the
board's maximum clocks), a duty cycle (mine some samples of every period, idle the rest while
holding the DAG in memory) and the kernel intensity (share of time kernels run). This module
re-plays the detector's own mining samples under such settings with a simple physical model of
the board and asks, for each setting, what share of the hash rate the miner keeps and what share
of its samples (and of its GPUs) the detector still flags at its calibrated threshold.

Board model, per GPU, from its own readings in the data set: maximum power = its highest power draw
(or its ``max_power_limit`` when records are given), minimum power limit = 35% of that, idle power =
its 5th-percentile draw (at most 30% of the maximum); core power scales with (clock ratio)^2, memory
power with the memory-clock ratio, both with intensity; a power limit below the demand throttles the
core clock until the draw fits; temperature follows power above the GPU's coolest reading. Hash rate
kept = duty x intensity x (memory ratio)^a x (core ratio)^b, with a = 0.9, b = 0.1 for memory-hard
algorithms (Ethash-like) and the reverse for compute-bound ones. The off phase of a duty cycle reads
as the GPU's own idlest sample (idle clocks, power and temperature where it never idled) with the
miner's memory still held.

The search draws ``n_configs`` seeded random settings (plus the no-attack setting and each knob
alone at its limit) and reports, for each attacker budget (share of hash rate kept), the lowest
recall any setting reaches: the recall-versus-hash-rate frontier. ``log_report`` writes it to
MLflow (experiment ``abp-evasion``); ``robustness_gate`` is the opt-in promotion check.

    python -m secml.abp.evasion --model models:/abp-nvsmi-xgb@production
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from secml.abp import MODEL_NAME, PROD_ALIAS
from secml.abp import model as m
from secml.abp.features import FEATURES

log = logging.getLogger(__name__)

EXPERIMENT = "abp-evasion"
TAG = "evasion_run_id"  # model-version tag: the run holding the version's evasion report
REPORT_ARTIFACT = "evasion.json"
BUDGETS = (0.1, 0.25, 0.5, 0.75, 0.9)
PERIOD = 10  # samples per duty-cycle period
MIN_POWER_SHARE = 0.35  # minimum power limit as a share of the maximum (typical boards: 0.3-0.4)
MIN_CORE_SHARE = 0.3
MIN_MEM_SHARE = 0.5
MIN_DUTY = 0.1
MIN_INTENSITY = 0.1
# The lowest setting of each control the board allows, as a share of its maximum.
LOWS = {"power_limit": MIN_POWER_SHARE, "core_clock": MIN_CORE_SHARE, "mem_clock": MIN_MEM_SHARE,
        "duty": MIN_DUTY, "intensity": MIN_INTENSITY}  # fmt: skip
# Plain miners: the starting point of every attack (the evasive profiles are attacks already).
BASE_PROFILES = ("mining_memhard", "mining_compute")
COMPUTE_PROFILES = ("mining_compute",)


def _col(suffix: str) -> int:
    return FEATURES.index("nvidia_smi_log.gpu." + suffix)


FB_USED, FB_FREE = _col("fb_memory_usage.used"), _col("fb_memory_usage.free")
UTIL, MEM_UTIL = _col("utilization.gpu_util"), _col("utilization.memory_util")
TEMP, POWER = _col("temperature.gpu_temp"), _col("power_readings.power_draw")
GCLK, SMCLK, MCLK = _col("clocks.graphics_clock"), _col("clocks.sm_clock"), _col("clocks.mem_clock")
MAX_GCLK, MAX_MCLK = _col("max_clocks.graphics_clock"), _col("max_clocks.mem_clock")


@dataclass(frozen=True)
class Controls:
    """What the miner sets, each as a share of the board's maximum (1.0 = untouched)."""

    power_limit: float = 1.0
    core_clock: float = 1.0
    mem_clock: float = 1.0
    duty: float = 1.0
    intensity: float = 1.0

    def __post_init__(self) -> None:
        for name, low in LOWS.items():
            v = getattr(self, name)
            if not low - 1e-9 <= v <= 1.0 + 1e-9:
                raise ValueError(f"{name} must be within the board's limits [{low}, 1.0], got {v}")


@dataclass
class Boards:
    """Per-row physical limits of the GPU each row comes from."""

    p_max: np.ndarray
    p_idle: np.ndarray
    t_amb: np.ndarray
    max_g: np.ndarray
    max_m: np.ndarray
    idle_row: np.ndarray  # (n, 18) the GPU's idlest reading


def boards_of(
    ds: m.Dataset, rows: np.ndarray, power_limits: dict[str, float] | None = None
) -> Boards:
    """Limits of the GPUs of ``rows`` from all their readings in ``ds`` (see the module doc)."""
    X = ds.X
    out = {k: np.empty(len(rows)) for k in ("p_max", "p_idle", "t_amb", "max_g", "max_m")}
    idle = np.empty((len(rows), X.shape[1]), dtype=np.float32)
    for g in np.unique(ds.gpu[rows]):
        mine = ds.gpu == g
        sel = ds.gpu[rows] == g
        p = X[mine, POWER]
        p = p[np.isfinite(p)]
        p_max = float(np.max(p)) if len(p) else math.nan
        if power_limits and g in power_limits:
            p_max = float(power_limits[g])
        out["p_max"][sel] = p_max
        # below the lowest power limit: a GPU that never idled in the data gets 30% of its max
        low = float(np.percentile(p, 5)) if len(p) else 0.0
        out["p_idle"][sel] = min(max(low, 0.05 * p_max), 0.3 * p_max)
        t = X[mine, TEMP]
        out["t_amb"][sel] = float(np.nanmin(t)) if np.isfinite(t).any() else math.nan
        for key, col, cur in (("max_g", MAX_GCLK, GCLK), ("max_m", MAX_MCLK, MCLK)):
            v = X[mine, col]
            v = v[np.isfinite(v)]
            obs = X[mine, cur]
            out[key][sel] = float(v.max()) if len(v) else float(np.nanmax(obs))
        order = np.where(np.isfinite(X[mine, POWER]), X[mine, POWER], np.inf)
        row = X[mine][int(np.argmin(order))].copy()
        if not np.nan_to_num(row[UTIL], nan=0.0) <= 10:  # the GPU never idled: make a reading
            row[[UTIL, MEM_UTIL]] = 0.0
            row[POWER] = out["p_idle"][sel][0] if np.isfinite(row[POWER]) else np.nan
            row[[GCLK, SMCLK]] = np.minimum(row[GCLK], 0.15 * out["max_g"][sel][0])
            row[TEMP] = out["t_amb"][sel][0]
        idle[sel] = row
    return Boards(**out, idle_row=idle)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    return np.where(np.isfinite(r) & (den > 0), np.clip(r, 0.0, 1.0), 1.0)


def _phase_on(ds: m.Dataset, duty: float) -> np.ndarray:
    """Per row: mining (True) or idle (False) under ``duty``, each GPU's rows in time order."""
    on = np.ones(len(ds), dtype=bool)
    k = max(1, round(duty * PERIOD))
    if k >= PERIOD:
        return on
    for g in np.unique(ds.gpu):
        idx = np.flatnonzero(ds.gpu == g)
        idx = idx[np.argsort(ds.time[idx], kind="stable")]
        on[idx] = (np.arange(len(idx)) % PERIOD) < k
    return on


def apply(ds: m.Dataset, boards: Boards, c: Controls) -> tuple[np.ndarray, np.ndarray]:
    """The readings of ``ds``'s mining rows under controls ``c``; and each row's hash rate kept."""
    X = ds.X.astype(np.float64, copy=True)
    g0, s0, m0 = X[:, GCLK].copy(), X[:, SMCLK].copy(), X[:, MCLK].copy()
    p0, t0 = X[:, POWER].copy(), X[:, TEMP].copy()
    g = np.minimum(g0, c.core_clock * boards.max_g)
    mc = np.minimum(m0, c.mem_clock * boards.max_m)
    rg, rm = _ratio(g, g0), _ratio(mc, m0)
    dyn0 = np.maximum(np.nan_to_num(p0, nan=0.0) - boards.p_idle, 0.0)
    demand = 0.65 * rg**2 + 0.35 * rm
    cap = c.power_limit * boards.p_max
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(
            dyn0 * c.intensity > 0, (cap - boards.p_idle) / (dyn0 * c.intensity), np.inf
        )
    throttled = demand > room
    # the driver lowers the core clock until the draw fits under the limit
    rg_fit = np.sqrt(np.clip((room - 0.35 * rm) / 0.65, 0.05**2, 1.0))
    rg = np.where(throttled, np.minimum(rg, rg_fit), rg)
    demand = np.minimum(0.65 * rg**2 + 0.35 * rm, np.where(np.isfinite(room), room, demand))
    # a reading at or below the idle estimate has no dynamic part to scale: it stays as read
    power = np.where(dyn0 > 0, boards.p_idle + dyn0 * c.intensity * demand, p0)
    X[:, GCLK] = rg * g0
    X[:, SMCLK] = np.minimum(s0, X[:, GCLK])
    X[:, MCLK] = mc
    X[:, UTIL] = X[:, UTIL] * c.intensity
    X[:, MEM_UTIL] = X[:, MEM_UTIL] * c.intensity
    X[:, POWER] = np.where(np.isfinite(p0), power, np.nan)  # N/A stays N/A
    heat = _ratio(power - 0.0, np.where(p0 > 0, p0, np.nan))
    X[:, TEMP] = boards.t_amb + (t0 - boards.t_amb) * heat
    compute = np.isin(ds.profile, COMPUTE_PROFILES)
    a, b = np.where(compute, 0.1, 0.9), np.where(compute, 0.9, 0.1)
    kept = c.intensity * rm**a * rg**b
    on = _phase_on(ds, c.duty)
    if not on.all():
        off = ~on
        held = X[off][:, [FB_USED, FB_FREE]]  # the miner keeps its DAG in memory
        X[off] = boards.idle_row[off]
        X[np.ix_(off, [FB_USED, FB_FREE])] = held
        kept = np.where(on, kept, 0.0)
    return X.astype(np.float32), kept


def worst_recall(
    configs: list[dict[str, float]], budget: float
) -> tuple[float, dict[str, float] | None]:
    """Lowest recall among ``configs`` keeping at least ``budget`` of the hash rate (NaN: none)."""
    ok = [c for c in configs if c["hashrate_kept"] >= budget - 1e-9]
    if not ok:
        return math.nan, None
    best = min(ok, key=lambda c: c["recall"])
    return best["recall"], best


def frontier_curve(configs: list[dict[str, float]], budgets: Any) -> list[float]:
    """The attacker's frontier: :func:`worst_recall` at each of ``budgets`` (shares of 1)."""
    return [worst_recall(configs, float(b))[0] for b in budgets]


@dataclass
class EvasionReport:
    """Every setting tried, the recall-vs-hash-rate frontier and the baseline."""

    configs: list[dict[str, float]]
    frontier: dict[str, dict[str, Any]]
    baseline_recall: float
    threshold: float
    rows: int
    gpus: int
    meta: dict[str, Any] = field(default_factory=dict)

    def worst_recall(self, budget: float) -> tuple[float, dict[str, float] | None]:
        """Lowest recall of any setting that keeps at least ``budget`` of the hash rate."""
        return worst_recall(self.configs, budget)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``evasion.json`` artifact)."""
        return asdict(self)


def mining_base(ds: m.Dataset, max_rows: int = 4000, seed: int = 0) -> np.ndarray:
    """Row indices of plain-miner samples (whole GPUs, in time order) to attack from."""
    mask = (ds.y == 1) & np.isin(ds.profile, BASE_PROFILES)
    if not mask.any():  # unknown profiles: busy mining rows
        util = np.nan_to_num(ds.X[:, UTIL], nan=0.0)
        mask = (ds.y == 1) & (util >= 50)
    if not mask.any():
        raise ValueError("no mining samples to attack: the data set has no plain-miner rows")
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    total = 0
    for g in rng.permutation(np.unique(ds.gpu[mask])):
        idx = np.flatnonzero(mask & (ds.gpu == g))
        chosen.append(idx[np.argsort(ds.time[idx], kind="stable")])
        total += len(idx)
        if total >= max_rows:
            break
    return np.concatenate(chosen)


def candidate_controls(n: int, seed: int = 0) -> list[Controls]:
    """No attack, each knob alone at its limit, then ``n`` seeded random settings."""
    out = [Controls()] + [Controls(**{k: v}) for k, v in LOWS.items()]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        out.append(Controls(**{k: float(rng.uniform(v, 1.0)) for k, v in LOWS.items()}))
    return out


def search(
    booster: Any,
    ds: m.Dataset,
    n_configs: int = 150,
    seed: int = 0,
    max_rows: int = 4000,
    power_limits: dict[str, float] | None = None,
) -> EvasionReport:
    """Score ``ds``'s plain-miner samples under every candidate setting; build the frontier."""
    base_idx = mining_base(ds, max_rows, seed)
    base = ds.subset(base_idx)
    base.T = None  # temporal features are recomputed from the attacked readings
    boards = boards_of(ds, base_idx, power_limits)
    threshold = m.booster_threshold(booster)
    configs: list[dict[str, float]] = []
    for c in candidate_controls(n_configs, seed):
        X, kept = apply(base, boards, c)
        attacked = m.Dataset(X, base.y, base.gpu, base.time, base.profile)
        flagged = m.score_dataset(booster, attacked) >= threshold
        on = kept > 0
        per_gpu = [flagged[base.gpu == g].any() for g in np.unique(base.gpu)]
        configs.append(asdict(c) | {
            "hashrate_kept": float(kept.mean()),
            "recall": float(flagged.mean()),
            "recall_mining_phase": float(flagged[on].mean()) if on.any() else math.nan,
            "gpu_recall": float(np.mean(per_gpu)),
        })  # fmt: skip
    report = EvasionReport(configs, {}, configs[0]["recall"], threshold, len(base),
                           len(np.unique(base.gpu)))  # fmt: skip
    for b in BUDGETS:
        worst, cfg = report.worst_recall(b)
        report.frontier[f"{b:.2f}"] = {"worst_recall": worst, "config": cfg}
    return report


def frontier_figure(report: EvasionReport) -> Any:
    """Scatter of every setting (hash rate kept vs recall) with the attacker's frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    kept = [c["hashrate_kept"] for c in report.configs]
    rec = [c["recall"] for c in report.configs]
    ax.scatter(kept, rec, s=10, alpha=0.5, label="settings tried")
    grid = np.linspace(0.05, 1.0, 40)
    front = frontier_curve(report.configs, grid)
    ax.step(grid, front, where="post", color="C3", label="lowest recall at >= hash rate")
    ax.axhline(report.baseline_recall, color="grey", ls="--", label="no attack")
    ax.set(xlabel="hash rate kept by the miner", ylabel="recall (samples flagged)",
           xlim=(0, 1.02), ylim=(-0.02, 1.02),
           title="ABP evasion: recall vs attacker budget")  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def log_report(report: EvasionReport, model_uri: str, tags: dict[str, str] | None = None) -> str:
    """Log the report to MLflow (experiment ``abp-evasion``); tag the model version if known."""
    import mlflow
    import pandas as pd

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"evasion {model_uri}",
                          tags={"model_uri": model_uri} | (tags or {})) as run:  # fmt: skip
        mlflow.log_params({"model_uri": model_uri, "configs": len(report.configs),
                           "rows": report.rows, "gpus": report.gpus,
                           "threshold": report.threshold} | report.meta)  # fmt: skip
        metrics = {"baseline_recall": report.baseline_recall}
        for b, f in report.frontier.items():
            if np.isfinite(f["worst_recall"]):
                metrics[f"worst_recall_hashrate_ge_{b}"] = f["worst_recall"]
        mlflow.log_metrics(metrics)
        mlflow.log_dict(report.as_dict(), REPORT_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "evasion_configs.csv"
            pd.DataFrame(report.configs).to_csv(path, index=False)
            mlflow.log_artifact(str(path))
        fig = frontier_figure(report)
        mlflow.log_figure(fig, "plots/evasion_frontier.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
    _tag_version(model_uri, report, run.info.run_id)
    log.info("evasion report for %s: run %s, %s", model_uri, run.info.run_id, metrics)
    return run.info.run_id


def _tag_version(model_uri: str, report: EvasionReport, run_id: str) -> None:
    """Tag the registered version behind ``models:/name/version|@alias`` with the frontier."""
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        return
    client = MlflowClient()
    ref = model_uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, version = ref.rsplit("/", 1)
    client.set_model_version_tag(name, version, TAG, run_id)
    for b, f in report.frontier.items():
        client.set_model_version_tag(
            name, version, f"evasion_worst_recall_hashrate_ge_{b}", f"{f['worst_recall']:.4f}"
        )


def report_version(
    model_name: str,
    version: str,
    data: m.Dataset,
    n_configs: int,
    max_rows: int,
    seed: int = 0,
    tags: dict[str, str] | None = None,
) -> tuple[str, EvasionReport]:
    """Search ``model_name`` version ``version`` on ``data``'s miners; log and tag it.

    Returns the MLflow run id (also the version's ``evasion_run_id`` tag) and the report.
    """
    import mlflow

    uri = f"models:/{model_name}/{version}"
    booster = mlflow.xgboost.load_model(uri)
    report = search(booster, data, n_configs=n_configs, seed=seed, max_rows=max_rows)
    return log_report(report, uri, tags), report


def report_run_id(client: Any, model_name: str, version: str | int) -> str | None:
    """The run of the version's evasion report (its ``evasion_run_id`` tag), or None."""
    tags = client.get_model_version(model_name, str(version)).tags or {}
    return tags.get(TAG) or None


def load_report(client: Any, run_id: str) -> dict[str, Any]:
    """The ``evasion.json`` of evasion run ``run_id`` (as :meth:`EvasionReport.as_dict`)."""
    with tempfile.TemporaryDirectory(prefix="abp-evasion-") as tmp:
        path = client.download_artifacts(run_id, REPORT_ARTIFACT, tmp)
        report = json.loads(Path(path).read_text())
    if not isinstance(report, dict) or not isinstance(report.get("configs"), list):
        raise ValueError(f"run {run_id}'s {REPORT_ARTIFACT} is not an evasion report")
    return report


def robustness_gate(
    version: str, test: m.Dataset, model_name: str = MODEL_NAME, settings: Any = None
) -> tuple[bool, str]:
    """The opt-in robustness check of the promotion gate: ``(passes, reason)``.

    Off (``settings.abp_robustness_gate`` false): always passes. On: runs the evasion search on
    ``test``'s mining rows with the candidate version and requires its lowest recall among
    settings that keep ``abp_robustness_budget`` of the hash rate to reach
    ``abp_robustness_min_recall``; the report goes to MLflow and the version is tagged.
    """
    from secml.settings import get_settings

    s = settings or get_settings()
    if not s.abp_robustness_gate:
        return True, "robustness gate off (SECML_ABP_ROBUSTNESS_GATE)"
    try:
        _, report = report_version(model_name, version, test, s.abp_evasion_configs,
                                   s.abp_evasion_max_rows, tags={"gate": "robustness"})  # fmt: skip
    except ValueError as exc:
        return False, f"robustness gate: {exc}"
    worst, cfg = report.worst_recall(s.abp_robustness_budget)
    ok = bool(worst >= s.abp_robustness_min_recall)
    knobs = {k: round(v, 2) for k, v in (cfg or {}).items() if k in asdict(Controls())}
    why = (
        f"robustness: worst recall {worst:.4f} keeping >= {s.abp_robustness_budget:.0%} hash "
        f"rate ({knobs}) {'>=' if ok else 'is below'} the minimum {s.abp_robustness_min_recall}"
    )
    return ok, why


def apply_robustness_gate(
    promoted: bool, reason: str, version: str, test: m.Dataset, model_name: str = MODEL_NAME
) -> tuple[bool, str]:
    """The gate's decision after the opt-in robustness check (one line in ``gate.gate``).

    A version the gate already refused, or any version while ``abp_robustness_gate`` is off, is
    returned unchanged; otherwise a failed check refuses it with the check's reason.
    """
    if not promoted:
        return promoted, reason
    ok, why = robustness_gate(version, test, model_name)
    return (True, reason) if ok else (False, why)


def _dataset(args: argparse.Namespace) -> m.Dataset:
    if args.data:
        files = m.expand(args.data)
        labels = m.expand(args.labels) if args.labels else [
            str(Path(f).parent / "labels.csv") for f in files
        ]  # fmt: skip
        return m.build_dataset(m.read_jsonlines(files), m.read_labels(labels))[0]
    from secml.abp.generator import generate

    with tempfile.TemporaryDirectory(prefix="abp-evasion-") as tmp:
        data, labels = generate(Path(tmp), gpus=args.gpus, hours=args.hours, seed=args.seed,
                                interval_s=60)  # fmt: skip
        return m.build_dataset(m.read_jsonlines(str(data)), m.read_labels(str(labels)))[0]


def main(argv: list[str] | None = None) -> int:
    """CLI: evasion report for a model (default the production ABP model) on held-out data."""
    p = argparse.ArgumentParser(
        prog="python -m secml.abp.evasion", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", default=f"models:/{MODEL_NAME}@{PROD_ALIAS}",
                   help="MLflow model URI or a saved booster file")  # fmt: skip
    p.add_argument("--data", nargs="*", help="nvsmi JSON-lines files/globs (default: a fresh "
                   "seeded fleet of secml.abp.generator)")  # fmt: skip
    p.add_argument("--labels", nargs="*", help="labels CSVs (default: labels.csv beside data)")
    p.add_argument("--gpus", type=int, default=40, help="generated fleet size")
    p.add_argument("--hours", type=float, default=6.0, help="generated fleet hours")
    p.add_argument("--seed", type=int, default=101, help="generator and search seed")
    p.add_argument("--configs", type=int, default=150, help="random settings to try")
    p.add_argument("--no-mlflow", action="store_true", help="print only")
    args = p.parse_args(argv)
    from secml.settings import get_settings

    logging.basicConfig(level=get_settings().log_level)
    import mlflow

    mlflow.set_tracking_uri(get_settings().mlflow_tracking_uri)
    try:
        if args.model.startswith("models:/"):
            booster = mlflow.xgboost.load_model(args.model)
        else:
            booster = m.load_booster(args.model)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported the same way
        print(f"cannot load model {args.model!r}: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    ds = _dataset(args)
    report = search(booster, ds, n_configs=args.configs, seed=args.seed)
    lines = [
        f"model {args.model}: {report.rows} plain-miner samples on {report.gpus} GPUs, "
        f"{len(report.configs)} settings; no-attack recall {report.baseline_recall:.3f}"
    ]
    for b, f in report.frontier.items():
        lines.append(f"  keeping >= {float(b):.0%} hash rate: worst recall {f['worst_recall']:.3f}")
    print("\n".join(lines))  # noqa: T201
    if not args.no_mlflow:
        run_id = log_report(report, args.model)
        print(f"logged to MLflow experiment {EXPERIMENT!r}, run {run_id}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
