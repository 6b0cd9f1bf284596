"""The one settings object of the platform.

Every URL, port, path and credential is a field here. Values come from the
environment (prefix ``SECML_``) or a ``.env`` file; nothing else in the code base
reads ``os.environ`` for configuration. Outside ``local`` mode, secrets must be set.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
LOCAL_SECRET = "change-me-local-only"


class Settings(BaseSettings):
    """Platform settings; see ``.env.example`` for each variable and its meaning."""

    model_config = SettingsConfigDict(
        env_prefix="SECML_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["local", "production"] = "local"
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    run_dir: Path = ROOT / ".run"
    data_dir: Path | None = None

    # tracking
    mlflow_port: int = 5000
    mlflow_tracking_uri: str | None = None
    mlflow_backend_store_uri: str | None = None
    mlflow_artifacts_destination: str | None = None
    mlflow_retry_attempts: int = Field(6, ge=1, description="flows: tries of an MLflow step")
    mlflow_retry_delay_s: float = Field(
        10.0, gt=0, description="flows: wait between tries while MLflow is unreachable"
    )

    # orchestration
    prefect_port: int = 4200
    prefect_api_url: str | None = None
    prefect_work_pool: str = "secml-process"

    # inference
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    triton_url: str | None = None
    triton_grpc_url: str | None = None
    triton_model_repository: Path = ROOT / "triton_models"
    triton_timeout_s: float = 10.0
    triton_venv: Path = ROOT / ".venv-triton"

    # gateway
    gateway_port: int = 8086
    gateway_url: str | None = None
    gateway_api_key: SecretStr = SecretStr(LOCAL_SECRET)
    gateway_max_batch: int = 4096
    gateway_record_max_bytes: int = Field(
        4096, ge=256, description="stored detections keep at most this much of the raw record"
    )
    # serving threads: XGBoost / torch threads per Triton model instance (1: instances = cores)
    serving_xgb_threads: int = Field(1, ge=1, description="XGBoost threads per model instance")
    serving_torch_threads: int = Field(1, ge=1, description="torch threads per model instance")
    sync_poll_s: float = Field(3.0, gt=0, description="serving sync: MLflow alias poll period")
    sync_metrics_port: int = 8092  # the sync loop's /metrics

    # ui
    ui_port: int = 8501
    ui_url: str | None = None
    ui_username: str = "analyst"
    ui_password: SecretStr = SecretStr(LOCAL_SECRET)
    ui_auth: Literal["local", "oidc"] = "local"
    ui_oidc_provider: str | None = None
    ui_refresh_s: float = 5.0
    ui_session_hours: float = Field(
        12.0, gt=0, description="UI: how long a sign-in survives reloads and deep links"
    )
    # signs the UI's session cookie; None: derived from ui_password (changing it signs all out)
    ui_session_secret: SecretStr | None = None
    ui_page_size: int = Field(50, ge=10, le=500, description="UI: events per Detections page")

    # bus
    kafka_port: int = 9092
    kafka_bootstrap_servers: str | None = None
    kafka_control_topic: str = "dfp-control"
    kafka_dead_letter_topic: str = "dfp-control-dlq"
    kafka_output_topic: str = "dfp-detections"
    kafka_consumer_group: str = "secml-control"
    # SASL/PLAIN for every Kafka client when set (compose: the broker requires it)
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    consumer_metrics_port: int = 8089
    consumer_ledger_url: str | None = None  # idempotency ledger; default SQLite under run_dir

    # store
    store_url: str | None = None

    # monitoring
    prometheus_port: int = 9090
    prometheus_url: str | None = None
    grafana_url: str = "http://127.0.0.1:3000"
    prefect_exporter_port: int = 8090

    # object storage (production: MinIO / S3)
    s3_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None

    # detectors
    dfp_z_threshold: float = Field(2.0, description="mean_abs_z above this is an anomaly")
    dfp_min_user_events: int = 300
    dfp_target_alert_rate: float = Field(
        0.005,
        gt=0,
        lt=1,
        description="DFP alert threshold: this share of held-out benign logins alerts",
    )
    dfp_promotion_tolerance: float = Field(
        0.05, ge=0, description="a new DFP model is promoted unless its val loss is this much worse"
    )
    dfp_registry_ttl_s: float = Field(60.0, gt=0, description="DFP registry listing refresh period")
    dfp_model_cache_size: int = Field(256, ge=1, description="DFP models kept loaded (LRU)")
    abp_min_f1: float = 0.9
    abp_target_fpr: float = Field(
        0.001, gt=0, lt=1, description="ABP threshold: chosen on out-of-fold GPUs for this FPR"
    )
    abp_min_recall: float = Field(
        0.5, ge=0, le=1, description="ABP gate: minimum recall at abp_target_fpr on test GPUs"
    )
    abp_robustness_gate: bool = Field(
        False, description="ABP gate: also require recall under the evasion search (opt-in)"
    )
    abp_robustness_budget: float = Field(
        0.5, gt=0, le=1, description="ABP robustness: the attacker keeps at least this hash rate"
    )
    abp_robustness_min_recall: float = Field(
        0.5, ge=0, le=1, description="ABP robustness: minimum worst-case recall at that budget"
    )
    abp_evasion_on_promotion: bool = Field(
        True, description="ABP: abp-train logs the evasion report of each version it promotes"
    )
    abp_evasion_configs: int = Field(60, ge=1, description="ABP evasion: random settings tried")
    abp_evasion_max_rows: int = Field(
        4000, ge=100, description="ABP evasion: plain-miner samples attacked (whole GPUs)"
    )

    # auth of the servers themselves. None: that server runs open (the tests' own stacks);
    # `make up` generates them into <run_dir>/secrets.env; production requires them.
    mlflow_username: str = "secml-writer"  # MLflow basic-auth admin: flows, gate, sync
    mlflow_password: SecretStr | None = None
    mlflow_reader_username: str = "secml-reader"  # read-only: analysts, Prometheus
    mlflow_reader_password: SecretStr | None = None
    mlflow_flask_secret_key: SecretStr | None = None  # MLflow's CSRF key (auth app)
    prefect_api_auth_string: SecretStr | None = None  # "user:password" for the Prefect API
    triton_admin_key: SecretStr | None = None  # header triton-admin-key for load/unload

    # experiments (tuning, scale-out)
    dask_address: str | None = None  # a Dask scheduler (tcp://host:8786); None: LocalCluster
    tune_storage_url: str | None = None  # Optuna storage (RDB URL); None: journal file in run_dir

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        """Derive URLs and paths from host, ports and run_dir unless given explicitly."""
        run = self.run_dir
        h = self.host
        self.data_dir = self.data_dir or run / "data"
        self.mlflow_tracking_uri = self.mlflow_tracking_uri or f"http://{h}:{self.mlflow_port}"
        self.mlflow_backend_store_uri = (
            self.mlflow_backend_store_uri or f"sqlite:///{run / 'mlflow' / 'mlflow.db'}"
        )
        self.mlflow_artifacts_destination = self.mlflow_artifacts_destination or str(
            run / "mlflow" / "artifacts"
        )
        self.prefect_api_url = self.prefect_api_url or f"http://{h}:{self.prefect_port}/api"
        self.triton_url = self.triton_url or f"{h}:{self.triton_http_port}"
        self.triton_grpc_url = self.triton_grpc_url or f"{h}:{self.triton_grpc_port}"
        self.gateway_url = self.gateway_url or f"http://{h}:{self.gateway_port}"
        self.ui_url = self.ui_url or f"http://{h}:{self.ui_port}"
        self.kafka_bootstrap_servers = self.kafka_bootstrap_servers or f"{h}:{self.kafka_port}"
        self.store_url = self.store_url or f"sqlite:///{run / 'detections.db'}"
        self.prometheus_url = self.prometheus_url or f"http://{h}:{self.prometheus_port}"
        if self.environment != "local":
            for name in ("gateway_api_key", "ui_password"):
                if getattr(self, name).get_secret_value() == LOCAL_SECRET:
                    raise ValueError(
                        f"SECML_{name.upper()} must be set to a real secret when "
                        f"SECML_ENVIRONMENT={self.environment}"
                    )
            for name in ("mlflow_password", "prefect_api_auth_string", "triton_admin_key"):
                if getattr(self, name) is None:
                    raise ValueError(
                        f"SECML_{name.upper()} must be set when "
                        f"SECML_ENVIRONMENT={self.environment}"
                    )
        return self

    def kafka_client_config(self) -> dict[str, str]:
        """kafka-python connection arguments: the bootstrap servers, and SASL/PLAIN when set."""
        cfg = {"bootstrap_servers": self.kafka_bootstrap_servers or ""}
        user, password = self.kafka_sasl_username, self.kafka_sasl_password
        if user is None and password is None:
            return cfg
        if not user or password is None:
            missing = "SECML_KAFKA_SASL_PASSWORD" if user else "SECML_KAFKA_SASL_USERNAME"
            raise ValueError(f"Kafka SASL needs a username and a password: set {missing}")
        return cfg | {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": user,
            "sasl_plain_password": password.get_secret_value(),
        }

    def prefect_basic_auth(self) -> tuple[str, str] | None:
        """(user, password) for the Prefect API, or None when it runs open."""
        if self.prefect_api_auth_string is None:
            return None
        user, _, password = self.prefect_api_auth_string.get_secret_value().partition(":")
        return user, password


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
