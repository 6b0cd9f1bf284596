"""Plugin registry: data sets, detectors and attacks found through Python entry points.

A plugin is a factory registered in one of three entry-point groups of any installed
distribution (``pip install`` it; no change to this code base):

* ``secml.datasets``: ``factory(seed: int, workdir: Path, **params) -> Data``;
* ``secml.detectors``: ``factory(seed: int, **params) -> Detector``;
* ``secml.attacks``: ``factory(seed: int, **params) -> Attack``.

``params`` are the ``params:`` mapping of the experiment file. The platform's own plugins are
registered the same way in ``pyproject.toml`` (``BUILTIN`` below keeps them usable from a
checkout whose installed metadata is older). ``examples/secml-plugin-example`` is a complete
plugin package to copy.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

GROUPS = {"datasets": "secml.datasets", "detectors": "secml.detectors", "attacks": "secml.attacks"}

BUILTIN: dict[str, dict[str, str]] = {
    "datasets": {
        "abp-generator": "secml.experiments.builtin:abp_generator",
        "abp-independent": "secml.experiments.builtin:abp_independent",
        "abp-files": "secml.experiments.builtin:abp_files",
        "dfp-generator": "secml.experiments.dfp_attacks:dfp_generator",
    },
    "detectors": {
        "abp-xgboost": "secml.experiments.builtin:AbpXgboost",
        "dfp-autoencoder": "secml.experiments.dfp_attacks:DfpAutoencoder",
    },
    "attacks": {
        "abp-evasion": "secml.experiments.builtin:AbpEvasion",
        "dfp-mimicry": "secml.experiments.dfp_attacks:Mimicry",
        "dfp-spray": "secml.experiments.dfp_attacks:LowAndSlowSpray",
    },
}


class PluginError(LookupError):
    """A plugin that is not installed or cannot be loaded; the message names it."""


@dataclass
class Data:
    """A data set for one kind of detector: a training part and a held-out part."""

    kind: str  # what detectors accept it, e.g. "abp" or "dfp-duo"
    train: Any
    test: Any
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackResult:
    """What an attack found: metrics, tables (lists of rows) and matplotlib figures by name."""

    metrics: dict[str, float]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Detector(Protocol):
    """A trainable detector. ``kinds`` lists the ``Data.kind`` values it accepts."""

    kinds: tuple[str, ...]

    def fit(self, data: Data) -> None:
        """Train on ``data.train``."""

    def score(self, rows: Any, data: Data) -> np.ndarray:
        """Anomaly/mining score per row of ``rows`` (same shape as ``data.test``)."""

    @property
    def threshold(self) -> float:
        """Scores at or above it are alerts."""

    def metrics(self, data: Data) -> dict[str, float]:
        """Held-out metrics on ``data.test``."""


@runtime_checkable
class Attack(Protocol):
    """An attack on a trained detector; ``kinds`` lists the ``Data.kind`` values it works on."""

    kinds: tuple[str, ...]

    def run(self, detector: Detector, data: Data) -> AttackResult:
        """Attack ``detector`` using ``data``; report what it achieved."""


def available(group: str) -> dict[str, str]:
    """``{name: "module:attr"}`` of every plugin of ``group`` (installed ones win)."""
    if group not in GROUPS:
        raise ValueError(f"plugin group must be one of {', '.join(GROUPS)}; got {group!r}")
    found = dict(BUILTIN[group])
    for ep in entry_points(group=GROUPS[group]):
        found[ep.name] = ep.value
    return found


def load(group: str, name: str) -> Any:
    """The factory of plugin ``name`` in ``group``; a missing one names what is installed."""
    target = available(group).get(name)
    if target is None:
        known = ", ".join(sorted(available(group)))
        raise PluginError(f"no {group[:-1]} plugin named {name!r}; installed: {known}")
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(
            f"{group[:-1]} plugin {name!r} ({target}) cannot be loaded: {exc}"
        ) from exc
    return obj


def make(group: str, name: str, seed: int, params: dict[str, Any], **extra: Any) -> Any:
    """Build plugin ``name`` with the experiment's ``params``; bad params name the plugin."""
    factory = load(group, name)
    try:
        return factory(seed=seed, **extra, **params)
    except TypeError as exc:
        raise PluginError(
            f"{group[:-1]} plugin {name!r}: bad params {sorted(params)}: {exc}"
        ) from exc


def describe() -> dict[str, dict[str, str]]:
    """Every group's plugins (for ``python -m training.experiment plugins``)."""
    return {g: available(g) for g in GROUPS}


def workdir(base: Path, name: str) -> Path:
    """A data set's working directory under the experiment's output."""
    d = base / "data" / name
    d.mkdir(parents=True, exist_ok=True)
    return d
