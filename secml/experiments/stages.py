"""The stages of an experiment file as plain functions: data, train, attack, report.

``training/experiment.py`` wraps them in Prefect tasks (fanned out on Dask when the file's
``runner`` asks) and a flow; these functions know nothing of Prefect.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secml.experiments import plugins
from secml.experiments.plugins import AttackResult, Data
from secml.experiments.spec import AttackSpec, DetectorSpec, ExperimentSpec

log = logging.getLogger(__name__)


@dataclass
class Trained:
    """A trained detector and its held-out metrics."""

    name: str
    kind: str
    detector: Any
    metrics: dict[str, float]
    seconds: float


@dataclass
class Attacked:
    """One attack's outcome (figures as PNG bytes, so it travels between processes)."""

    name: str
    kind: str
    detector: str
    metrics: dict[str, float]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0


def load_data(spec: ExperimentSpec, out: Path) -> dict[str, Data]:
    """Build every data set of the file (each under ``out/data/<name>``)."""
    found = {}
    for d in spec.datasets:
        data = plugins.make(
            "datasets", d.kind, spec.seed, d.params, workdir=plugins.workdir(out, d.name)
        )
        if not isinstance(data, Data):
            raise plugins.PluginError(
                f"dataset plugin {d.kind!r} returned {type(data).__name__}, not plugins.Data"
            )
        found[d.name] = data
        log.info("dataset %s (%s): %s", d.name, d.kind, data.info)
    return found


def train(d: DetectorSpec, data: Data, seed: int) -> Trained:
    """Build detector ``d``, fit it on its data set's training part, measure it held out."""
    t0 = time.monotonic()
    det = plugins.make("detectors", d.kind, seed, d.params)
    if data.kind not in getattr(det, "kinds", ()):
        raise plugins.PluginError(f"detector {d.name!r} ({d.kind}) accepts {det.kinds}, but "
                                  f"dataset {d.dataset!r} is {data.kind!r}")  # fmt: skip
    det.fit(data)
    metrics = {k: float(v) for k, v in det.metrics(data).items()}
    return Trained(d.name, d.kind, det, metrics, time.monotonic() - t0)


def attack(a: AttackSpec, trained: Trained, data: Data, seed: int) -> Attacked:
    """Run attack ``a`` against a trained detector on its data set."""
    t0 = time.monotonic()
    att = plugins.make("attacks", a.kind, seed, a.params)
    if data.kind not in getattr(att, "kinds", ()):
        raise plugins.PluginError(
            f"attack {a.name!r} ({a.kind}) works on {att.kinds}, but "
            f"detector {a.detector!r} was trained on {data.kind!r}"
        )
    res = att.run(trained.detector, data)
    if not isinstance(res, AttackResult):
        raise plugins.PluginError(f"attack plugin {a.kind!r} returned {type(res).__name__}, "
                                  "not plugins.AttackResult")  # fmt: skip
    return Attacked(a.name, a.kind, a.detector, {k: float(v) for k, v in res.metrics.items()},
                    res.tables, {k: _png(f) for k, f in res.figures.items()},
                    time.monotonic() - t0)  # fmt: skip


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}


def summary_figure(trained: list[Trained], attacked: list[Attacked]) -> bytes | None:
    """Bar chart: each attack's recall-like metrics next to its detector's held-out recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: dict[str, float] = {}
    for t in trained:
        for k in ("recall", "target_fpr_recall"):
            if k in t.metrics:
                bars[f"{t.name}: {k} (held out)"] = t.metrics[k]
    for a in attacked:
        for k, v in _finite(a.metrics).items():
            if "recall" in k:
                bars[f"{a.name}: {k}"] = v
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(bars) + 1.2))
    ax.barh(list(bars), list(bars.values()))
    ax.set(xlim=(0, 1), xlabel="share", title="detectors held out and under attack")
    fig.tight_layout()
    return _png(fig)


def report(spec: ExperimentSpec, out: Path, trained: list[Trained], attacked: list[Attacked],
           info: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Write results.json, metrics.csv, tables, figures under ``out``; archive it as .tar.gz."""
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    results = results_of(spec, trained, attacked, info)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    with (out / "metrics.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["stage", "name", "kind", "metric", "value"])
        for t in trained:
            w.writerows(["train", t.name, t.kind, k, v] for k, v in sorted(t.metrics.items()))
        for a in attacked:
            w.writerows(["attack", a.name, a.kind, k, v] for k, v in sorted(a.metrics.items()))
    for a in attacked:
        for name, png in a.figures.items():
            (out / "figures" / f"{a.name}-{name}.png").write_bytes(png)
        for name, rows in a.tables.items():
            if rows:
                with (out / "tables" / f"{a.name}-{name}.csv").open("w", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)
    fig = summary_figure(trained, attacked)
    if fig:
        (out / "figures" / "summary.png").write_bytes(fig)
    archive = out.with_suffix(".tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(out / "results.json", arcname=f"{out.name}/results.json")
        tar.add(out / "metrics.csv", arcname=f"{out.name}/metrics.csv")
        tar.add(out / "figures", arcname=f"{out.name}/figures")
        tar.add(out / "tables", arcname=f"{out.name}/tables")
    return {"archive": str(archive), "dir": str(out), "results": results}


def results_of(spec: ExperimentSpec, trained: list[Trained], attacked: list[Attacked],
               info: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The experiment's results as plain JSON."""
    return {
        "experiment": spec.name,
        "seed": spec.seed,
        "stages": list(spec.stages),
        "datasets": info,
        "detectors": {t.name: {"kind": t.kind, "metrics": t.metrics,
                               "seconds": round(t.seconds, 2)} for t in trained},
        "attacks": {a.name: {"kind": a.kind, "detector": a.detector, "metrics": a.metrics,
                             "seconds": round(a.seconds, 2)} for a in attacked},
    }  # fmt: skip
