"""Dispatch: create Prefect flow runs, idempotently (each run's key derives from its message).

:class:`PrefectDispatcher` talks to the Prefect API (bulk create where the server has it);
:func:`create_runs` sends a batch through any dispatcher and returns each run's id or error.
A :class:`DispatchError` means "not now" (Prefect away, deployment missing): the record is retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from training.consumer.validation import Dispatch

log = logging.getLogger(__name__)

RUN_TAGS = ("control-message",)
BULK_LIMIT = 100  # Prefect's limit per bulk create request


class DispatchError(RuntimeError):
    """A valid message could not be dispatched now (Prefect down, deployment missing); retried."""


class PrefectDispatcher:
    """Creates flow runs of deployments through the Prefect API (idempotent by key)."""

    def __init__(self, api_url: str | None = None) -> None:
        from prefect.client.orchestration import SyncPrefectClient
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self._ids: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._bulk_unsupported = False
        if api_url:
            with temporary_settings({PREFECT_API_URL: api_url}):
                self._client: SyncPrefectClient = _sync_client()
        else:
            self._client = _sync_client()
        self._client.__enter__()

    def deployment_id(self, name: str) -> Any:
        """The id of deployment ``<flow>/<deployment>`` (cached)."""
        from prefect.exceptions import ObjectNotFound

        with self._lock:
            if name in self._ids:
                return self._ids[name]
        try:
            dep = self._client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise DispatchError(
                f"Prefect deployment {name!r} does not exist; deploy it "
                "(python -m training.deploy) and the message will be retried"
            ) from None
        except Exception as exc:  # noqa: BLE001  (Prefect unreachable: retry later)
            raise DispatchError(f"cannot look up deployment {name!r}: {exc}") from exc
        with self._lock:
            self._ids[name] = dep.id
        return dep.id

    def __call__(self, d: Dispatch) -> str:
        """Create (or get back, by idempotency key) the flow run for ``d``; return its id."""
        from prefect.exceptions import ObjectNotFound

        dep_id = self.deployment_id(d.deployment)
        try:
            run = self._client.create_flow_run_from_deployment(
                dep_id,
                parameters=d.parameters,
                idempotency_key=d.idempotency_key,
                tags=list(RUN_TAGS),
                name=_run_name(d.message_id),
            )
        except ObjectNotFound:
            with self._lock:
                self._ids.pop(d.deployment, None)  # deployment was re-created; look it up again
            raise DispatchError(f"deployment {d.deployment!r} disappeared; retrying") from None
        except Exception as exc:  # noqa: BLE001  (any API failure means: retry later)
            raise DispatchError(f"creating a run of {d.deployment!r} failed: {exc}") from exc
        return str(run.id)

    def dispatch_batch(self, deployment: str, ds: list[Dispatch]) -> list[str | DispatchError]:
        """Create up to BULK_LIMIT runs of one deployment in one request and one transaction.

        Uses Prefect's ``POST /deployments/{id}/create_flow_run/bulk`` (idempotency keys apply
        as for single runs); falls back to one request per run where the server lacks it.
        """
        from prefect.client.schemas.actions import DeploymentFlowRunCreate
        from prefect.states import Scheduled, to_state_create

        if not ds:
            return []
        if self._bulk_unsupported:
            return self._singles(ds)
        if len(ds) > BULK_LIMIT:
            out: list[str | DispatchError] = []
            for i in range(0, len(ds), BULK_LIMIT):
                out.extend(self.dispatch_batch(deployment, ds[i : i + BULK_LIMIT]))
            return out
        dep_id = self.deployment_id(deployment)
        body = [
            DeploymentFlowRunCreate(
                parameters=d.parameters,
                state=to_state_create(Scheduled()),
                tags=list(RUN_TAGS),
                name=_run_name(d.message_id),
                idempotency_key=d.idempotency_key,
            ).model_dump(mode="json", exclude_unset=True)
            for d in ds
        ]
        try:
            response = self._client.request(
                "POST",
                "/deployments/{id}/create_flow_run/bulk",
                path_params={"id": dep_id},
                json=body,
            )
        except Exception as exc:  # noqa: BLE001
            status = getattr(getattr(exc, "response", None), "status_code", None)
            detail = getattr(getattr(exc, "response", None), "text", "")
            if status == 404 and "Deployment not found" in detail:
                with self._lock:
                    self._ids.pop(deployment, None)
                err = DispatchError(f"deployment {deployment!r} disappeared; retrying")
                return [err] * len(ds)
            if status in (404, 405):
                log.info("Prefect server has no bulk flow-run endpoint; creating runs one by one")
                self._bulk_unsupported = True
                return self._singles(ds)
            return [DispatchError(f"creating runs of {deployment!r} failed: {exc}")] * len(ds)
        results = response.json().get("results", [])
        if len(results) != len(ds):
            return [
                DispatchError(
                    f"bulk create of {deployment!r} answered {len(results)} "
                    f"results for {len(ds)} runs"
                )
            ] * len(ds)
        created: list[str | DispatchError] = []
        for d, r in zip(ds, results, strict=True):
            if r.get("status") == "CREATED" and r.get("flow_run_id"):
                created.append(str(r["flow_run_id"]))
            else:
                created.append(
                    DispatchError(
                        f"run of {deployment!r} for {d.message_id} failed: {r.get('error')}"
                    )
                )
        return created

    def _singles(self, ds: list[Dispatch]) -> list[str | DispatchError]:
        """One request per run (servers without the bulk endpoint)."""
        out: list[str | DispatchError] = []
        for d in ds:
            try:
                out.append(self(d))
            except DispatchError as exc:
                out.append(exc)
        return out

    def close(self) -> None:
        """Close the API client."""
        self._client.__exit__(None, None, None)


def _sync_client() -> Any:
    """A synchronous Prefect client for the configured API."""
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _run_name(mid: str) -> str:
    """A readable flow-run name derived from the message id."""
    return "cm-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in mid)[:60]


def create_runs(
    dispatcher: Callable[[Dispatch], str],
    todo: dict[tuple[str, str], tuple[Any, Dispatch]],
    pool: ThreadPoolExecutor,
) -> dict[tuple[str, str], str | DispatchError]:
    """Create the runs: in bulk per deployment when the dispatcher can, else one by one."""
    outcomes: dict[tuple[str, str], str | DispatchError] = {}
    batch = getattr(dispatcher, "dispatch_batch", None)
    if batch is None:
        single = {key: pool.submit(dispatcher, d) for key, (_, d) in todo.items()}
        for key, fut in single.items():
            try:
                outcomes[key] = fut.result()
            except DispatchError as exc:
                outcomes[key] = exc
        return outcomes
    groups: dict[str, list[tuple[str, str]]] = {}
    for key, (_, d) in todo.items():
        groups.setdefault(d.deployment, []).append(key)
    chunks = [
        (dep, keys[i : i + BULK_LIMIT])
        for dep, keys in groups.items()
        for i in range(0, len(keys), BULK_LIMIT)
    ]
    # One bulk request at a time: each is one write transaction on the Prefect database,
    # and parallel ones only contend for its lock (SQLite answers "database is locked").
    for dep, keys in chunks:
        try:
            results = batch(dep, [todo[k][1] for k in keys])
        except DispatchError as exc:
            results = [exc] * len(keys)
        outcomes.update(zip(keys, results, strict=True))
    return outcomes
