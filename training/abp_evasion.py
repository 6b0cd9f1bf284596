"""Prefect flow ``abp-evasion``: the evasion report of a registered ABP version (production).

The report (``secml.abp.evasion``: recall against the share of hash rate a miner keeps) is an
MLflow run of experiment ``abp-evasion`` with ``evasion.json`` and the frontier plot; the model
version is tagged ``evasion_run_id`` so the UI (Models, Compare runs) finds it.

Two ways in, so the production model always has one without a manual step:

* ``abp-train`` calls :func:`after_promotion` when its gate promotes a version: the search runs
  on that training run's held-out GPUs (``settings.abp_evasion_on_promotion``, on by default;
  ``abp_evasion_configs`` settings x ``abp_evasion_max_rows`` samples, about a second on two
  cores). A version that already has a report (the opt-in robustness gate wrote one) keeps it.
* The ``abp-evasion/default`` deployment (and ``make demo`` at its end) runs :func:`abp_evasion`
  for a version without a report, on the held-out GPUs of the same split as ``abp-train``'s
  (same files, same split parameters).
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from secml.abp import MODEL_NAME, PROD_ALIAS
from secml.abp import evasion as ev
from secml.abp import gate as gate_mod
from secml.abp import model as m
from secml.settings import get_settings
from training.mlflow_retry import with_mlflow

log = logging.getLogger(__name__)


def summary(run_id: str, report: ev.EvasionReport | None = None, reused: bool = False) -> dict:
    """What the flows return about a report: its run and, when just made, its frontier."""
    out: dict[str, Any] = {"run_id": run_id, "reused": reused}
    if report is not None:
        out["baseline_recall"] = report.baseline_recall
        out["worst_recall"] = {b: f["worst_recall"] for b, f in report.frontier.items()}
        out["configs"], out["rows"] = len(report.configs), report.rows
    return out


@task(name="abp-evasion-report", cache_policy=NO_CACHE)
def evasion_report(
    model_name: str, version: str, test: m.Dataset, seed: int, trigger: str
) -> dict[str, Any]:
    """Search ``model_name`` v``version`` on ``test``'s miners; log the report, tag the version."""
    s = get_settings()
    run_id, report = with_mlflow(
        f"the evasion report of {model_name} v{version}",
        ev.report_version,
        model_name,
        version,
        test,
        s.abp_evasion_configs,
        s.abp_evasion_max_rows,
        seed,
        {"trigger": trigger},
    )
    return summary(run_id, report)


def existing_report(model_name: str, version: str) -> str | None:
    """The run of ``model_name`` v``version``'s evasion report, or None."""
    from mlflow import MlflowClient

    return with_mlflow(
        f"reading {model_name} v{version}'s tags", ev.report_run_id, MlflowClient(), model_name,
        version,
    )  # fmt: skip


def after_promotion(model_name: str, version: str, test: m.Dataset, seed: int = 0) -> dict:
    """``abp-train``'s step after its gate promoted ``version``: the report, unless one exists.

    Never fails the training flow (the version is in production already): a failed search is
    logged and returned as ``{"error": ...}``; ``abp-evasion/default`` can make it later.
    """
    if not get_settings().abp_evasion_on_promotion:
        return {"skipped": "SECML_ABP_EVASION_ON_PROMOTION is off"}
    try:
        found = existing_report(model_name, version)
        if found:
            return summary(found, reused=True)
        state = evasion_report(model_name, version, quote(test), seed, "promotion",
                               return_state=True)  # fmt: skip
        return state.result()
    except Exception as exc:  # noqa: BLE001 - the model is promoted; say why the report is missing
        log.error("no evasion report for %s v%s: %s", model_name, version, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def resolve_version(model_name: str, version: str | None) -> str:
    """``version`` itself, or the version holding the ``production`` alias (clear error if none)."""
    if version:
        return str(version)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        mv = MlflowClient().get_model_version_by_alias(model_name, PROD_ALIAS)
    except MlflowException as exc:
        raise ValueError(
            f"{model_name} has no {PROD_ALIAS!r} version to report on; pass version="
        ) from exc
    return str(mv.version)


def heldout(data: list[str] | None, labels: list[str] | None, split_by: str,
            test_fraction: float, seed: int) -> m.Dataset:  # fmt: skip
    """The held-out split of the nvsmi files, as ``abp-train`` splits them with the same values."""
    from pathlib import Path

    from secml.abp.generator import LABELS_FILE

    files = m.expand(data or [str(Path(get_settings().data_dir) / "abp" / "*.jsonlines")])
    labs = m.expand(labels or list(dict.fromkeys(str(Path(f).parent / LABELS_FILE)
                                                 for f in files)))  # fmt: skip
    ds, _ = m.build_dataset(m.read_jsonlines(files), m.read_labels(labs))
    _, test = m.split(ds, split_by, test_fraction, seed)
    return ds.subset(test)


@flow(name="abp-evasion", log_prints=False)
def abp_evasion(
    model_name: str = MODEL_NAME,
    version: str | None = None,
    data: list[str] | None = None,
    labels: list[str] | None = None,
    split_by: str = "gpu",
    test_fraction: float = 0.25,
    seed: int = 0,
    force: bool = False,
) -> dict[str, Any]:
    """The evasion report of ``model_name`` ``version`` (default: production) on held-out GPUs.

    Args:
        model_name: registered ABP model (default ``abp-nvsmi-xgb``).
        version: version number; ``None`` takes the one holding the ``production`` alias.
        data, labels, split_by, test_fraction, seed: as ``abp-train`` (same defaults): the
            search attacks the miners of the held-out split.
        force: search again even if the version already has a report.
    """
    s = get_settings()
    with_mlflow("abp-evasion", gate_mod.configure_tracking, s.mlflow_tracking_uri)
    version = with_mlflow("abp-evasion", resolve_version, model_name, version)
    found = None if force else existing_report(model_name, version)
    if found:
        log.info("abp-evasion: %s v%s already has a report (run %s)", model_name, version, found)
        return {"version": version} | summary(found, reused=True)
    test = heldout(data, labels, split_by, test_fraction, seed)
    out = evasion_report(model_name, version, quote(test), seed, "abp-evasion")
    log.info("abp-evasion: %s v%s: %s", model_name, version, out)
    return {"version": version} | out
