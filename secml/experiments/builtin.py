"""The platform's own ABP plugins: fleets, the XGBoost detector and the evasion attack.

Registered in ``pyproject.toml`` under the ``secml.datasets`` / ``secml.detectors`` /
``secml.attacks`` entry points, like any third-party plugin; thin adapters over
``secml.abp.model``, ``secml.abp.generator``, ``secml.abp.independent`` and
``secml.abp.evasion``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from secml.abp import evasion as ev
from secml.abp import model as m
from secml.experiments.plugins import AttackResult, Data


def _fleet(data: Path, labels: Path, split_by: str, test_fraction: float, seed: int,
           info: dict[str, Any]) -> Data:  # fmt: skip
    ds, counts = m.build_dataset(m.read_jsonlines(str(data)), m.read_labels(str(labels)))
    tr, te = m.split(ds, split_by, test_fraction, seed)
    return Data("abp", ds.subset(tr), ds.subset(te), info | counts)


def abp_generator(seed: int, workdir: Path, gpus: int = 24, hours: float = 3.0,
                  interval_s: float = 60.0, split_by: str = "gpu",
                  test_fraction: float = 0.25) -> Data:  # fmt: skip
    """A seeded fleet of ``secml.abp.generator``, split by GPU (or time)."""
    from secml.abp.generator import generate

    data, labels = generate(workdir, gpus=gpus, hours=hours, seed=seed, interval_s=interval_s)
    return _fleet(data, labels, split_by, test_fraction, seed,
                  {"generator": "secml.abp.generator", "gpus": gpus, "hours": hours})  # fmt: skip


def abp_independent(seed: int, workdir: Path, gpus: int = 40, hours: float = 6.0,
                    split_by: str = "gpu", test_fraction: float = 0.5) -> Data:  # fmt: skip
    """A fleet of the structurally different generator (``secml.abp.independent``)."""
    from secml.abp.independent import generate

    data, labels = generate(workdir, gpus=gpus, hours=hours, seed=seed)
    return _fleet(data, labels, split_by, test_fraction, seed,
                  {"generator": "secml.abp.independent", "gpus": gpus, "hours": hours})  # fmt: skip


def abp_files(seed: int, workdir: Path, data: list[str] | str = "", labels: list[str] | None = None,
              split_by: str = "gpu", test_fraction: float = 0.25) -> Data:  # fmt: skip
    """nvsmi JSON-lines files (globs, fsspec URLs) and their labels CSVs."""
    if not data:
        raise ValueError("abp-files needs params.data: JSON-lines files or globs")
    files = m.expand(data)
    labs = m.expand(labels) if labels else [str(Path(f).parent / "labels.csv") for f in files]
    ds, counts = m.build_dataset(m.read_jsonlines(files), m.read_labels(labs))
    tr, te = m.split(ds, split_by, test_fraction, seed)
    return Data("abp", ds.subset(tr), ds.subset(te), {"files": files} | counts)


class AbpXgboost:
    """The ABP XGBoost classifier, threshold calibrated out of fold for ``target_fpr``."""

    kinds = ("abp",)

    def __init__(self, seed: int, target_fpr: float = 0.001, **params: Any) -> None:
        self.params = m.TrainParams(**params, seed=seed)
        self.target_fpr = target_fpr
        self.booster: Any = None

    def fit(self, data: Data) -> None:
        """Train on the training GPUs."""
        self.booster, _ = m.fit_calibrated(data.train, self.params, self.target_fpr)

    def score(self, rows: m.Dataset, data: Data) -> np.ndarray:
        """Mining probability per row."""
        return m.score_dataset(self.booster, rows)

    @property
    def threshold(self) -> float:
        """The calibrated threshold stored with the booster."""
        return m.booster_threshold(self.booster)

    def metrics(self, data: Data) -> dict[str, float]:
        """``secml.abp.model.evaluate`` on the held-out GPUs."""
        t = data.test
        return m.evaluate(t.y, self.score(t, data), t.profile, self.threshold, self.target_fpr)


class AbpEvasion:
    """The evasion search of ``secml.abp.evasion`` against any ABP detector with a booster."""

    kinds = ("abp",)

    def __init__(self, seed: int, configs: int = 100, max_rows: int = 4000) -> None:
        self.seed, self.configs, self.max_rows = seed, configs, max_rows

    def run(self, detector: Any, data: Data) -> AttackResult:
        """Search the miner's settings on the held-out GPUs; the frontier as metrics."""
        booster = getattr(detector, "booster", None)
        if booster is None:
            raise TypeError("abp-evasion needs a detector with an XGBoost booster (abp-xgboost)")
        report = ev.search(booster, data.test, self.configs, self.seed, self.max_rows)
        metrics = {"baseline_recall": report.baseline_recall}
        for b, f in report.frontier.items():
            metrics[f"worst_recall_hashrate_ge_{b}"] = f["worst_recall"]
        return AttackResult(metrics, {"configs": report.configs},
                            {"evasion_frontier": ev.frontier_figure(report)})  # fmt: skip
