"""An example secml plugin package: one detector and one attack for ABP fleets.

Copy this package to write your own (see README.md beside it): a detector is any object with
``kinds``, ``fit(data)``, ``score(rows, data)``, ``threshold`` and ``metrics(data)``; an attack has
``kinds`` and ``run(detector, data) -> AttackResult``. Both are built as ``Factory(seed=...,
**params)`` from the experiment file's ``params``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from secml.abp import model as m
from secml.abp.features import DERIVED
from secml.experiments.plugins import AttackResult, Data


class LogisticDetector:
    """Logistic regression over the 18 nvidia-smi features and their ratios (NaN -> 0)."""

    kinds = ("abp",)

    def __init__(self, seed: int, c: float = 1.0, target_fpr: float = 0.01) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
        )
        self.target_fpr = target_fpr
        self._threshold = 0.5

    @staticmethod
    def _x(ds: m.Dataset) -> np.ndarray:
        return np.nan_to_num(m.model_inputs(ds.X, DERIVED), nan=0.0, posinf=0.0, neginf=0.0)

    def fit(self, data: Data) -> None:
        """Fit on the training GPUs; threshold for ``target_fpr`` on the training scores."""
        self.model.fit(self._x(data.train), data.train.y)
        s = self.model.predict_proba(self._x(data.train))[:, 1]
        self._threshold = m.calibrate_threshold(data.train.y, s, self.target_fpr)

    def score(self, rows: m.Dataset, data: Data) -> np.ndarray:
        """Mining probability per row."""
        return self.model.predict_proba(self._x(rows))[:, 1]

    @property
    def threshold(self) -> float:
        """Alert at or above this probability."""
        return self._threshold

    def metrics(self, data: Data) -> dict[str, float]:
        """The platform's ABP metrics on the held-out GPUs."""
        t = data.test
        return m.evaluate(t.y, self.score(t, data), t.profile, self.threshold, self.target_fpr)


class NoiseAttack:
    """Multiplicative Gaussian noise on every reading of the held-out miners."""

    kinds = ("abp",)

    def __init__(self, seed: int, scale: float = 0.1) -> None:
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        self.rng, self.scale = np.random.default_rng(seed), scale

    def run(self, detector: Any, data: Data) -> AttackResult:
        """Recall on the held-out miners before and after the noise."""
        t = data.test
        miners = t.subset(np.flatnonzero(t.y == 1))
        before = detector.score(miners, data) >= detector.threshold
        noisy = m.Dataset(
            miners.X * (1 + self.rng.normal(0, self.scale, miners.X.shape)).astype(np.float32),
            miners.y, miners.gpu, miners.time, miners.profile,
        )  # fmt: skip
        after = detector.score(noisy, data) >= detector.threshold
        return AttackResult({"recall_before": float(before.mean()),
                             "recall_after": float(after.mean())})  # fmt: skip
