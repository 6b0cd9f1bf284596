"""The experiment file: one YAML document validated by a pydantic schema.

    name: abp-robustness
    seed: 0
    datasets:
      - {name: fleet, kind: abp-generator, params: {gpus: 24, hours: 3}}
    detectors:
      - {name: xgb, kind: abp-xgboost, dataset: fleet, params: {n_estimators: 100}}
    attacks:
      - {name: evade, kind: abp-evasion, detector: xgb, params: {configs: 40}}
    stages: [train, attack, report]
    runner: {dask: false, workers: 2}

``kind`` names a plugin (``secml.experiments.plugins``); ``dataset`` and ``detector`` name
entries of the same file. Every error names the file and the field, e.g.
``exp.yaml: detectors[0].dataset: no dataset named 'flet' (datasets: fleet)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from secml.experiments import plugins

Stage = Literal["train", "attack", "report"]
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class SpecError(ValueError):
    """An experiment file that cannot be run; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    """A data set plugin and its parameters."""

    name: str = Field(pattern=NAME)
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class DetectorSpec(_Strict):
    """A detector plugin trained on one of the file's data sets."""

    name: str = Field(pattern=NAME)
    kind: str
    dataset: str
    params: dict[str, Any] = Field(default_factory=dict)


class AttackSpec(_Strict):
    """An attack plugin run against one of the file's detectors."""

    name: str = Field(pattern=NAME)
    kind: str
    detector: str
    params: dict[str, Any] = Field(default_factory=dict)


class RunnerSpec(_Strict):
    """Where detectors and attacks run: threads, a local Dask cluster or a scheduler."""

    dask: bool = False
    workers: int = Field(2, ge=1, le=64)
    address: str | None = None


class ExperimentSpec(_Strict):
    """A whole experiment: data sets, detectors, attacks and the stages to run."""

    name: str = Field(pattern=NAME)
    description: str = ""
    seed: int = 0
    datasets: list[DatasetSpec] = Field(min_length=1)
    detectors: list[DetectorSpec] = Field(min_length=1)
    attacks: list[AttackSpec] = Field(default_factory=list)
    stages: list[Stage] = Field(default_factory=lambda: ["train", "attack", "report"], min_length=1)
    runner: RunnerSpec = Field(default_factory=RunnerSpec)
    output_dir: str | None = None
    mlflow: bool = True

    @model_validator(mode="after")
    def _references(self) -> ExperimentSpec:
        """Names unique; references resolve; kinds installed; stages in a runnable order."""
        errors: list[str] = []
        for field in ("datasets", "detectors", "attacks"):
            seen: set[str] = set()
            for i, item in enumerate(getattr(self, field)):
                if item.name in seen:
                    errors.append(f"{field}[{i}].name: {item.name!r} is used twice")
                seen.add(item.name)
                group = field
                if item.kind not in plugins.available(group):
                    known = ", ".join(sorted(plugins.available(group)))
                    errors.append(
                        f"{field}[{i}].kind: no {group[:-1]} plugin named {item.kind!r} "
                        f"(installed: {known})"
                    )
        data_names = [d.name for d in self.datasets]
        det_names = [d.name for d in self.detectors]
        for i, d in enumerate(self.detectors):
            if d.dataset not in data_names:
                errors.append(f"detectors[{i}].dataset: no dataset named {d.dataset!r} "
                              f"(datasets: {', '.join(data_names)})")  # fmt: skip
        for i, a in enumerate(self.attacks):
            if a.detector not in det_names:
                errors.append(f"attacks[{i}].detector: no detector named {a.detector!r} "
                              f"(detectors: {', '.join(det_names)})")  # fmt: skip
        if len(set(self.stages)) != len(self.stages):
            errors.append(f"stages: a stage is listed twice ({self.stages})")
        order = ["train", "attack", "report"]
        if [s for s in order if s in self.stages] != list(self.stages):
            errors.append(f"stages: must run in the order train, attack, report; got {self.stages}")
        if "attack" in self.stages and "train" not in self.stages:
            errors.append("stages: 'attack' needs 'train' (attacks run against trained detectors)")
        if "attack" in self.stages and not self.attacks:
            errors.append("attacks: the 'attack' stage is listed but no attack is defined")
        if errors:
            raise ValueError("; ".join(errors))
        return self


def _loc(loc: tuple[Any, ...]) -> str:
    """``('detectors', 0, 'kind')`` -> ``detectors[0].kind``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse(doc: Any, where: str = "experiment") -> ExperimentSpec:
    """Validate a loaded YAML document; every problem in one ``SpecError`` naming its field."""
    if not isinstance(doc, dict):
        raise SpecError(f"{where}: expected a mapping at the top level, got {type(doc).__name__}")
    try:
        return ExperimentSpec.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "value_error" and not err["loc"]:
                lines.extend(f"{where}: {part}" for part in msg.split("; "))
            else:
                lines.append(f"{where}: {_loc(err['loc'])}: {msg}")
        raise SpecError("\n".join(lines)) from None


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{p}: cannot read the experiment file: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{p}:{at} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse(doc, str(p))
