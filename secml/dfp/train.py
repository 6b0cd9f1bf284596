"""Train DFP autoencoders per user (and ``generic``), register them in MLflow, gate promotion.

Each model is registered as ``dfp-<source>-<user>`` (:func:`secml.naming.user_to_model_name`),
its version tagged with the data window and row count. The ``production`` alias moves only
through :func:`promote_if_not_worse`: the new version's validation loss (held-out rows of its
own window) is compared with the validation loss recorded for the current production version,
and the alias moves unless the new one is worse by more than ``settings.dfp_promotion_tolerance``
(relative). The first version of a model is always promoted.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from secml.dfp.model import AutoEncoder, feature_config, find_model_dir
from secml.naming import GENERIC_USER, user_to_model_name
from secml.settings import Settings, get_settings

log = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"
MODEL_ARTIFACT = "model"
_exp_lock = threading.Lock()


@dataclass
class TrainResult:
    """What training one user's model produced and whether it went to production."""

    source: str
    user: str
    model_name: str
    version: str
    rows: int
    val_loss: float
    champion_version: str | None
    champion_loss: float | None
    promoted: bool
    window_start: str | None
    window_end: str | None
    run_id: str

    @property
    def model_version(self) -> str:
        """``<name>:<version>`` as written on scored rows."""
        return f"{self.model_name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logs and flow results."""
        return asdict(self)


class DFPAutoEncoderModel(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: ``predict(df)`` returns :meth:`AutoEncoder.score` columns."""

    def load_context(self, context: Any) -> None:
        """Load the autoencoder from the logged ``autoencoder`` artifact directory."""
        self.model = AutoEncoder.load(find_model_dir(context.artifacts["autoencoder"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        """Score ``model_input`` (feature columns) with the autoencoder."""
        return self.model.score(model_input)


def exclude_confirmed_anomalies(df: pd.DataFrame, source: str, store: Any = None) -> pd.DataFrame:
    """Drop rows whose ``event_id`` an analyst labelled ``true_positive`` for DFP ``source``."""
    if "event_id" not in df.columns or df.empty:
        return df
    if store is None:
        from secml.store import get_store

        store = get_store()
    labelled = store.labelled("dfp", source)
    if labelled.empty:
        return df
    confirmed = set(labelled.loc[labelled["label"] == "true_positive", "event_id"].astype(str))
    keep = ~df["event_id"].astype(str).isin(confirmed)
    dropped = int((~keep).sum())
    if dropped:
        log.info("left %d confirmed anomalies of %s out of training", dropped, source)
    return df[keep]


def experiment_id(source: str, client: Any = None) -> str:
    """The MLflow experiment ``dfp-<source>``, created if missing (safe across threads)."""
    client = client or MlflowClient(get_settings().mlflow_tracking_uri)
    name = f"dfp-{source}"
    with _exp_lock:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(name)
        except MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id


def _window(df: pd.DataFrame) -> tuple[str | None, str | None]:
    """First and last ``timestamp`` of ``df`` as ISO 8601 UTC, if the column exists."""
    if "timestamp" not in df.columns or df.empty:
        return None, None
    ts = pd.to_datetime(df["timestamp"], utc=True)
    return ts.min().isoformat(), ts.max().isoformat()


def load_version(
    name: str, version: str, device: str = "auto", tracking_uri: str | None = None
) -> AutoEncoder:
    """Download model version ``name``/``version`` from MLflow and load its autoencoder."""
    uri = tracking_uri or get_settings().mlflow_tracking_uri
    # ``models:/`` URIs resolve through the process-wide registry URI, not the argument
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    if mlflow.get_registry_uri() != uri:
        mlflow.set_registry_uri(uri)
    with tempfile.TemporaryDirectory(prefix="dfp-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=tmp,
            tracking_uri=uri,
            registry_uri=uri,
        )
        return AutoEncoder.load(find_model_dir(local), device=device)


def gate_passes(new_loss: float, champion_loss: float | None, tolerance: float) -> bool:
    """True unless ``new_loss`` is worse than ``champion_loss`` by more than ``tolerance``."""
    if not math.isfinite(new_loss):
        return False
    if champion_loss is None or not math.isfinite(champion_loss):
        return True
    return new_loss <= champion_loss * (1.0 + tolerance) + 1e-12


def _recorded_val_loss(client: MlflowClient, mv: Any) -> float | None:
    """The ``val_loss`` a model version was registered with (tag, else its run's metric)."""
    tag = (mv.tags or {}).get("val_loss")
    if tag not in (None, ""):
        return float(tag)
    if mv.run_id:
        metric = client.get_run(mv.run_id).data.metrics.get("val_loss")
        return None if metric is None else float(metric)
    return None


def promote_if_not_worse(
    name: str,
    version: str,
    val_loss: float,
    tolerance: float,
    client: MlflowClient | None = None,
) -> tuple[bool, str | None, float | None]:
    """Move ``production`` to ``version`` unless its validation loss is worse than the current
    production version's beyond ``tolerance`` (relative). Returns (promoted, champion, its loss).
    """
    client = client or MlflowClient(get_settings().mlflow_tracking_uri)
    try:
        champ = client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
    except MlflowException:
        champ = None
    new_loss = float(val_loss)
    champ_version, champ_loss = None, None
    if champ is not None and str(champ.version) != str(version):
        champ_version = str(champ.version)
        champ_loss = _recorded_val_loss(client, champ)
    promoted = gate_passes(new_loss, champ_loss, tolerance)
    if champ_version is not None:
        client.set_model_version_tag(name, version, "gate_champion", f"{name}:{champ_version}")
        client.set_model_version_tag(name, version, "gate_champion_loss", f"{champ_loss}")
    client.set_model_version_tag(name, version, "gate", "promoted" if promoted else "rejected")
    if promoted:
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
        log.info("%s:%s -> production (loss %.4g vs %s)", name, version, new_loss, champ_loss)
    else:
        log.warning(
            "%s:%s not promoted: loss %.4g worse than production %s (%.4g) beyond %.0f%%",
            name,
            version,
            new_loss,
            champ_version,
            champ_loss,
            tolerance * 100,
        )
    return promoted, champ_version, champ_loss


def analyst_labels(source: str, store: Any = None) -> pd.DataFrame | None:
    """Analysts' labelled DFP detections of ``source`` as risk-model rows (None if the store
    cannot be read: training goes on without them, and says so)."""
    from secml.dfp.scoring import labelled_rows

    try:
        if store is None:
            from secml.store import get_store

            store = get_store()
        return labelled_rows(store.labelled("dfp", source))
    except Exception as exc:  # noqa: BLE001 - the store is optional for training
        log.warning("analysts' labels not used for the %s risk model: %s", source, exc)
        return None


def train_user(
    df: pd.DataFrame,
    source: str,
    user: str,
    params: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> TrainResult:
    """Fit an autoencoder on ``df`` (one user's rows, or all for ``generic``); register it."""
    settings = settings or get_settings()
    if df.empty:
        raise ValueError(f"no training rows for user {user!r} of source {source!r}")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient(settings.mlflow_tracking_uri)
    name = user_to_model_name(source, user)
    if user == GENERIC_USER:  # the generic model carries the calibrated risk model
        from secml.dfp.quality import fit_generic

        model = fit_generic(df, source, params=params, alert_rate=settings.dfp_target_alert_rate)
    else:
        model = AutoEncoder(feature_config(source), **(params or {}))
        model.fit(df)
    start, end = _window(df)
    tags = {
        "source": source,
        "user": user,
        "row_count": str(len(df)),
        "data_window_start": start or "",
        "data_window_end": end or "",
        "val_loss": f"{model.val_loss:.6g}",
        "train_loss": f"{model.train_loss:.6g}",
        "epochs": str(model.epochs_trained),
    }
    exp = experiment_id(source, client)
    with tempfile.TemporaryDirectory(prefix="dfp-train-") as tmp:
        model_dir = model.save(Path(tmp) / "autoencoder")
        with mlflow.start_run(experiment_id=exp, run_name=name, tags=tags) as run:
            mlflow.log_params(
                {k: v for k, v in model.metadata()["config"].items() if k != "device"}
            )
            for h in model.history:
                step = int(h["epoch"])
                mlflow.log_metrics(
                    {"epoch_train_loss": h["train_loss"], "epoch_val_loss": h["val_loss"]}, step
                )
            mlflow.log_metrics(
                {
                    "val_loss": model.val_loss,
                    "train_loss": model.train_loss,
                    "row_count": float(len(df)),
                    "epochs": float(model.epochs_trained),
                }
            )
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=DFPAutoEncoderModel(),
                artifacts={"autoencoder": str(model_dir)},
                pip_requirements=["torch", "pandas", "numpy", "secml"],
                registered_model_name=name,
                await_registration_for=60,
            )
            run_id = run.info.run_id
    version = str(info.registered_model_version)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    client.set_model_version_tag(name, version, "run_id", run_id)
    promoted, champ_v, champ_loss = promote_if_not_worse(
        name, version, model.val_loss, settings.dfp_promotion_tolerance, client
    )
    return TrainResult(
        source=source,
        user=user,
        model_name=name,
        version=version,
        rows=len(df),
        val_loss=model.val_loss,
        champion_version=champ_v,
        champion_loss=champ_loss,
        promoted=promoted,
        window_start=start,
        window_end=end,
        run_id=run_id,
    )
