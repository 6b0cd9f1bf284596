"""Dispatch: create Prefect flow runs, idempotently (each run's key derives from its message).

:class:`PrefectDispatcher` talks to the Prefect REST API (bulk create where the server has it);
:func:`create_runs` sends a batch through any dispatcher and returns each run's id or error.
A :class:`DispatchError` means "not now" (Prefect away, deployment missing): the record is retried.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from secml.settings import get_settings
from training.consumer.validation import Dispatch

log = logging.getLogger(__name__)

RUN_TAGS = ("control-message",)
BULK_LIMIT = 100  # Prefect's limit per bulk create request
RETRY_STATUS = frozenset({429, 502, 503})  # answers worth a second try within the call
RETRY_WAITS_S = (0.2, 0.5, 1.0)


class DispatchError(RuntimeError):
    """A valid message could not be dispatched now (Prefect down, deployment missing); retried."""


class PrefectDispatcher:
    """Creates flow runs of deployments through the Prefect REST API (idempotent by key).

    Plain HTTP (httpx) rather than Prefect's client: the consumer is a long-lived idle process,
    and importing ``prefect`` for three endpoints cost it ~45 MiB of RSS. Auth is Prefect's own
    scheme: ``Authorization: Basic base64(PREFECT_API_AUTH_STRING)``.
    """

    def __init__(
        self, api_url: str | None = None, auth_string: str | None = None, timeout_s: float = 30.0
    ) -> None:
        import httpx

        url = api_url or os.environ.get("PREFECT_API_URL") or get_settings().prefect_api_url
        if not url:
            raise DispatchError("no Prefect API URL (SECML_PREFECT_API_URL or PREFECT_API_URL)")
        auth = auth_string if auth_string is not None else os.environ.get("PREFECT_API_AUTH_STRING")
        headers = {}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/", headers=headers, timeout=timeout_s
        )
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._bulk_unsupported = False

    def _send(self, method: str, path: str, **kw: Any) -> Any:
        """One request, sent again after a short wait while Prefect answers 429/502/503 (its
        own client does the same: a busy server's SQLite answers 503 for a moment)."""
        response = self._http.request(method, path, **kw)
        for wait in RETRY_WAITS_S:
            if response.status_code not in RETRY_STATUS:
                break
            after = response.headers.get("Retry-After", "")
            time.sleep(min(float(after), 5.0) if after.isdigit() else wait)
            response = self._http.request(method, path, **kw)
        return response

    def _post(self, path: str, body: Any) -> Any:
        """POST ``body`` to ``path``; the response (raises httpx errors, HTTP ones included)."""
        response = self._send("POST", path, json=body)
        response.raise_for_status()
        return response

    def deployment_id(self, name: str) -> str:
        """The id of deployment ``<flow>/<deployment>`` (cached)."""
        with self._lock:
            if name in self._ids:
                return self._ids[name]
        flow, _, deployment = name.partition("/")
        try:
            response = self._send("GET", f"deployments/name/{quote(flow)}/{quote(deployment)}")
            if response.status_code == 404:
                raise DispatchError(
                    f"Prefect deployment {name!r} does not exist; deploy it "
                    "(python -m training.deploy) and the message will be retried"
                )
            response.raise_for_status()
            dep_id = str(response.json()["id"])
        except DispatchError:
            raise
        except Exception as exc:  # noqa: BLE001  (Prefect unreachable: retry later)
            raise DispatchError(f"cannot look up deployment {name!r}: {exc}") from exc
        with self._lock:
            self._ids[name] = dep_id
        return dep_id

    def __call__(self, d: Dispatch) -> str:
        """Create (or get back, by idempotency key) the flow run for ``d``; return its id."""
        dep_id = self.deployment_id(d.deployment)
        try:
            run = self._post(f"deployments/{dep_id}/create_flow_run", _run_body(d)).json()
        except Exception as exc:  # noqa: BLE001  (any API failure means: retry later)
            if _status(exc) == 404:
                with self._lock:
                    self._ids.pop(d.deployment, None)  # re-created deployment: look it up again
                raise DispatchError(f"deployment {d.deployment!r} disappeared; retrying") from None
            raise DispatchError(f"creating a run of {d.deployment!r} failed: {exc}") from exc
        return str(run["id"])

    def dispatch_batch(self, deployment: str, ds: list[Dispatch]) -> list[str | DispatchError]:
        """Create up to BULK_LIMIT runs of one deployment in one request and one transaction.

        Uses Prefect's ``POST /deployments/{id}/create_flow_run/bulk`` (idempotency keys apply
        as for single runs); falls back to one request per run where the server lacks it.
        """
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
        body = [_run_body(d) for d in ds]
        try:
            response = self._post(f"deployments/{dep_id}/create_flow_run/bulk", body)
        except Exception as exc:  # noqa: BLE001
            status = _status(exc)
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
        """Close the HTTP client."""
        self._http.close()


def _run_body(d: Dispatch) -> dict[str, Any]:
    """Prefect's ``DeploymentFlowRunCreate`` for ``d``, as JSON: scheduled now, tagged, named
    after the message, keyed for idempotency."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "state": {
            "type": "SCHEDULED",
            "name": "Scheduled",
            "state_details": {"scheduled_time": now},
        },
        "name": _run_name(d.message_id),
        "parameters": d.parameters,
        "tags": list(RUN_TAGS),
        "idempotency_key": d.idempotency_key,
    }


def _status(exc: Exception) -> int | None:
    """The HTTP status of a failed request, if it got an answer."""
    return getattr(getattr(exc, "response", None), "status_code", None)


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
