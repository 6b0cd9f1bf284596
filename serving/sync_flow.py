"""The Prefect flow ``serving-sync``: one ``serving.sync.sync_all`` round as a flow run.

Kept apart from ``serving.sync`` so that the long-running poll loop never imports Prefect;
``serving.sync.serving_sync`` still names this flow for the deployment's entry point.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from serving.sync import sync_all


@flow(name="serving-sync", log_prints=False)
def serving_sync() -> list[dict[str, Any]]:
    """Prefect flow: publish every production model into the Triton repository."""
    return [r.to_dict() for r in sync_all()]
