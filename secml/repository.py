"""Layout of the Triton model repository, shared by ``serving.sync`` (which writes it) and the
Triton python-backend models (which read it). Files only: no HTTP client, no web framework.

Layout (``settings.triton_model_repository``)::

    echo/                    foundation identity model
    abp_nvsmi_xgb/
      config.pbtxt           version_policy latest 1: Triton serves the highest version
      1/model.py             the code; version 1 has no weights and answers NOT_SYNCED
      <n>/model.py           copied by sync, with
      <n>/model/             the registered model's files (the XGBoost booster)
      <n>/meta.json          {"registered_model", "version", "run_id", "synced_at"}
    dfp/
      config.pbtxt
      1/model.py             one Triton model serves every DFP user of every source
      users/index.json       {"models": {"dfp-duo-alice": "3", ...}} written atomically by sync
      users/hot.json         {"models": ["dfp-duo-alice", ...]}: the models of the most
                             recently active users (sync, from the detections store), which
                             the dfp model keeps loaded (at most its LRU size)
      users/<name>/<version>/model.json + state_dict.pt

DFP serving decision: thousands of per-user autoencoders are **not** thousands of Triton models
(each python-backend model is a process). One ``dfp`` model holds an LRU cache of user models
(``settings.dfp_model_cache_size``) loaded on demand from the synced files; the synced index
says which version is in production, and a user without a model of their own is scored by
``dfp-<source>-generic``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ABP_MODEL = "abp_nvsmi_xgb"
DFP_MODEL = "dfp"
ABP_REGISTERED = "abp-nvsmi-xgb"
META_FILE = "meta.json"
MODEL_SUBDIR = "model"
USERS_DIR = "users"
INDEX_FILE = "index.json"
HOT_FILE = "hot.json"
PLACEHOLDER_VERSION = 1
NOT_SYNCED = "NOT_SYNCED"
# A synced DFP model's files: secml.dfp.model's CONFIG_FILE and WEIGHTS_FILE, and the generic
# model's secml.dfp.scoring.RISK_FILE (named here so sync needs no torch to copy them).
DFP_MODEL_FILES = ("model.json", "state_dict.pt", "risk.json")


class NotSyncedError(RuntimeError):
    """No production model has been synced into the repository yet."""

    def __init__(self, what: str) -> None:
        """Name what is missing; the text starts with NOT_SYNCED for the gateway."""
        super().__init__(
            f"{NOT_SYNCED}: {what} has no production version synced into the Triton repository"
        )


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temp file and rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def version_dirs(model_dir: Path) -> list[int]:
    """Numeric version directories of a Triton model, ascending."""
    if not model_dir.is_dir():
        return []
    out = []
    for p in model_dir.iterdir():
        if p.is_dir() and p.name.isdigit() and not p.name.startswith("0"):
            out.append(int(p.name))
    return sorted(out)


def read_meta(version_dir: Path) -> dict[str, Any] | None:
    """The sync metadata of one version directory, or None (placeholder)."""
    f = version_dir / META_FILE
    if not f.is_file():
        return None
    return json.loads(f.read_text())


def read_index(dfp_dir: Path) -> dict[str, str]:
    """DFP model name -> synced production version (empty when nothing is synced)."""
    f = dfp_dir / USERS_DIR / INDEX_FILE
    if not f.is_file():
        return {}
    return {str(k): str(v) for k, v in json.loads(f.read_text()).get("models", {}).items()}


def user_model_dir(dfp_dir: Path, name: str, version: str) -> Path:
    """Directory of one synced DFP model version."""
    return dfp_dir / USERS_DIR / name / str(version)


def find_autoencoder_dir(root: Path) -> Path:
    """The directory under ``root`` (inclusive) holding a saved autoencoder (``model.json`` and
    ``state_dict.pt``): what ``secml.dfp.model.find_model_dir`` finds, without importing torch."""
    config, weights = DFP_MODEL_FILES[:2]
    for d in (root, *sorted(p.parent for p in Path(root).rglob(config))):
        if (d / config).is_file() and (d / weights).is_file():
            return d
    raise FileNotFoundError(f"no saved autoencoder ({config} + {weights}) under {root}")


def read_hot(dfp_dir: Path) -> list[str]:
    """The models of the most recently active DFP users, most recent first (empty when sync
    wrote none)."""
    f = dfp_dir / USERS_DIR / HOT_FILE
    if not f.is_file():
        return []
    return [str(m) for m in json.loads(f.read_text()).get("models", [])]


def copy_foundation(src: Path, dst: Path) -> None:
    """Copy the repository's foundation (each model's config and version 1, the code) from
    ``src`` to ``dst``, leaving out what sync wrote there: later versions and DFP user models
    (a checkout where ``make demo`` ran holds them, and a copy would serve them)."""
    import shutil

    def synced(folder: str, names: list[str]) -> set[str]:
        if Path(folder).parent != src:
            return {n for n in names if n == "__pycache__"}
        return {n for n in names if n == USERS_DIR or (n.isdigit() and n != "1")}

    shutil.copytree(src, dst, ignore=synced)
