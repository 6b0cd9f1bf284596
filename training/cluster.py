"""Where parallel Prefect tasks run: threads, a local ``distributed`` cluster, or a scheduler.

One helper for every flow that fans out (per-user DFP training, tuning trials, experiment stages):
``dask=False`` keeps Prefect's thread pool; ``dask=True`` starts a ``distributed.LocalCluster`` of
``workers`` single-threaded processes through prefect-dask, or, when ``settings.dask_address`` is
set, the scheduler there (the compose file's ``dask-scheduler``); an explicit ``address`` always
goes to that scheduler. Remote workers need the same ``SECML_*`` settings.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def task_runner(dask: bool, address: str | None = None, workers: int = 2) -> Any:
    """Threads; with ``dask``, the configured scheduler or a LocalCluster; or ``address``."""
    from prefect.task_runners import ThreadPoolTaskRunner

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not dask and not address:
        return ThreadPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    if not address:
        from secml.settings import get_settings

        address = get_settings().dask_address

    if address:
        log.info("fanning out on the Dask scheduler at %s", address)
        return DaskTaskRunner(address=address)
    log.info("fanning out on a local Dask cluster of %d worker processes", workers)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )
