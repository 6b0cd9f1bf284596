"""``make demo``: train and promote both detectors, publish them to Triton, send traffic.

Runs against the stack ``make up`` started: generates ABP and DFP data under
``<data_dir>``, trains and promotes ``abp-nvsmi-xgb`` and the DFP models, syncs the production
versions into the Triton repository, and sends records through the gateway so that its metrics
move and the detections store holds anomalies waiting to be labelled in the UI.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

from secml.settings import Settings, get_settings

log = logging.getLogger("demo")


def _sample(records: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n`` records chosen with a seed (keeps the demo's traffic small and repeatable)."""
    rng = random.Random(seed)
    return records if len(records) <= n else rng.sample(records, n)


def run(settings: Settings | None = None, seed: int = 0) -> dict[str, Any]:
    """The whole demo; returns a summary of each step."""
    # Imported here: Prefect and MLflow read their variables on import (set by ``main``).
    from demo.abp import demo as abp_demo
    from demo.dfp import demo as dfp_demo
    from secml.abp.generator import DATA_FILE
    from secml.dfp.loader import read_file
    from serving.sync import sync_all
    from serving.traffic import read_jsonl, send

    s = settings or get_settings()
    summary: dict[str, Any] = {}

    abp = abp_demo(s, seed=seed)
    summary["abp"] = {
        "version": abp["version"],
        "f1": abp["metrics"]["f1"],
        "promoted": abp["gate"]["promoted"],
        "evasion_run_id": (abp.get("evasion") or {}).get("run_id"),
    }
    summary["dfp"] = dfp_demo(s, sources=("duo",), seed=42 + seed)

    summary["sync"] = [r.to_dict() for r in sync_all(s)]

    nvsmi = read_jsonl(Path(s.data_dir or "") / "abp" / DATA_FILE)
    abp_traffic = send("abp", "nvsmi", _sample(nvsmi, 2000, seed), batch=256, settings=s)
    duo_dir = Path(s.data_dir or "") / "dfp-demo" / "duo"
    # The newest batch files hold the demo's attack window.
    files = sorted(duo_dir.glob("DUO_*.json"))
    duo = [rec for f in files[-len(files) // 6 :] for rec in read_file(str(f), s)]
    dfp_traffic = send("dfp", "duo", _sample(duo, 600, seed), batch=64, settings=s)
    for name, t in (("abp", abp_traffic), ("dfp", dfp_traffic)):
        summary[f"traffic_{name}"] = {
            "records": t.records,
            "anomalies": t.anomalies,
            "stored": t.stored,
            "models": sorted(t.models)[:5],
        }
    return summary


def main() -> int:
    """CLI entry point for ``make demo``."""
    from secml.stack import secrets as local_secrets

    if local_secrets.load(get_settings().run_dir):  # the credentials `make up` generated
        get_settings.cache_clear()
    s = get_settings()
    # Prefect and MLflow read their own variables when first imported: point them at the stack.
    os.environ.setdefault("PREFECT_API_URL", s.prefect_api_url or "")
    os.environ.setdefault("MLFLOW_TRACKING_URI", s.mlflow_tracking_uri or "")
    if s.mlflow_password is not None:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", s.mlflow_username)
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", s.mlflow_password.get_secret_value())
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    summary = run(s)
    log.info("demo summary:\n%s", json.dumps(summary, indent=2, default=str))
    log.info("detections wait for labels in the UI: %s", s.ui_url)
    return 0
