"""ABP part of the demo: generate nvidia-smi data for a fleet, train, register, promote a model.

``make demo`` calls :func:`demo` with the running stack's settings (MLflow and Prefect up).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from secml.abp import MODEL_NAME
from secml.abp.generator import DATA_FILE, generate
from secml.settings import Settings, get_settings

log = logging.getLogger(__name__)


def demo(
    settings: Settings | None = None,
    gpus: int = 24,
    hours: float = 6.0,
    seed: int = 0,
    model_name: str = MODEL_NAME,
) -> dict[str, Any]:
    """Generate data under ``<data_dir>/abp`` (if absent), run ``abp-train``; return its result."""
    settings = settings or get_settings()
    out = Path(settings.data_dir) / "abp"
    if not (out / DATA_FILE).exists():
        generate(out, gpus=gpus, hours=hours, seed=seed)
    # Prefect reads its own variable; point it at the stack's server unless already set.
    os.environ.setdefault("PREFECT_API_URL", str(settings.prefect_api_url))
    from training.abp_flow import abp_train

    result = abp_train(
        data=[str(out / DATA_FILE)],
        seed=seed,
        model_name=model_name,
        min_f1=settings.abp_min_f1,
        min_recall=settings.abp_min_recall,
        target_fpr=settings.abp_target_fpr,
    )
    gate = result["gate"]
    log.info(
        "ABP demo: %s v%s, F1 %.4f, %s",
        model_name,
        result["version"],
        result["metrics"]["f1"],
        "promoted to production" if gate["promoted"] else f"not promoted: {gate['reason']}",
    )
    return result
