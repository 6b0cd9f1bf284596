"""Register the platform's Prefect deployments on the process work pool.

Each entry is (module path relative to the repo, flow function name). The flow's own
name (e.g. ``abp-train``) plus ``/default`` is the deployment name that the UI, the
control-message consumer and ``prefect deployment run`` use.
"""

from __future__ import annotations

import importlib
import logging

from secml.settings import ROOT, get_settings

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "default"

# (file relative to the repository root, flow function). Add a line per deployed flow.
FLOWS: list[tuple[str, str]] = [
    ("training/abp_flow.py", "abp_train"),
    ("training/abp_evasion.py", "abp_evasion"),
    ("training/dfp_flows.py", "dfp_train"),
    ("training/dfp_flows.py", "dfp_infer"),
    ("serving/sync_flow.py", "serving_sync"),
    ("training/tune.py", "abp_tune"),
    ("training/tune.py", "dfp_tune"),
    ("training/experiment.py", "experiment"),
]


def deploy_all() -> list[str]:
    """Create the work pool if missing and (re)deploy every flow in ``FLOWS``; return full names."""
    from prefect import flow as prefect_flow  # noqa: F401  (imports prefect settings early)

    settings = get_settings()
    _ensure_pool(settings.prefect_work_pool)
    names = []
    for path, func in FLOWS:
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        fl = getattr(module, func)
        fl.from_source(source=str(ROOT), entrypoint=f"{path}:{func}").deploy(
            name=DEPLOYMENT_NAME, work_pool_name=settings.prefect_work_pool, print_next_steps=False
        )
        names.append(f"{fl.name}/{DEPLOYMENT_NAME}")
        log.info("deployed %s/%s", fl.name, DEPLOYMENT_NAME)
    return names


def _ensure_pool(name: str) -> None:
    """Create the process work pool ``name`` unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


if __name__ == "__main__":
    logging.basicConfig(level=get_settings().log_level)
    for n in deploy_all():
        log.info("ready: %s", n)
