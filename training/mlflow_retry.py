"""Bounded retries of a flow's MLflow step while the MLflow server is down, saying why.

MLflow's own client retries a refused connection for about four minutes per call, logging only
urllib3's ``Retrying (...)`` lines, which name no server. A flow step that needs the registry
goes through :func:`with_mlflow`: while the server does not answer it logs which server, what
waits on it and when the next try is, tries again up to ``settings.mlflow_retry_attempts``
times ``settings.mlflow_retry_delay_s`` apart, and then fails with a ``ConnectionError`` that
names the URL and what to do. An error while the server answers is the step's own and is raised
at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from secml.settings import Settings, get_settings
from secml.stack import mlflow_ready

log = logging.getLogger(__name__)

T = TypeVar("T")


def with_mlflow(
    what: str,
    fn: Callable[..., T],
    *args: object,
    settings: Settings | None = None,
    **kwargs: object,
) -> T:
    """``fn(*args, **kwargs)``, retried while MLflow is unreachable (bounded; logs why)."""
    s = settings or get_settings()
    uri = s.mlflow_tracking_uri or ""
    attempts, delay = s.mlflow_retry_attempts, s.mlflow_retry_delay_s
    remote = uri.startswith("http")
    waited = False
    for attempt in range(1, attempts + 1):
        if not remote or mlflow_ready(s):
            if waited:
                log.info("MLflow at %s answers again; %s (try %d/%d)", uri, what, attempt, attempts)
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not remote or mlflow_ready(s):
                    raise  # the server answers: the step's own error
                reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            reason = "no answer to its API"
        if attempt == attempts:
            break
        waited = True
        log.warning(
            "MLflow at %s is unreachable (%s); %s waits for it: try %d/%d in %.0f s",
            uri, reason, what, attempt + 1, attempts, delay,
        )  # fmt: skip
        time.sleep(delay)
    raise ConnectionError(
        f"MLflow at {uri} is unreachable ({reason}) after {attempts} tries "
        f"{delay:.0f} s apart: {what} not done. Start it (`make up`) or point "
        "SECML_MLFLOW_TRACKING_URI at a server, then run the flow again (its cached steps "
        "are not repeated)."
    )
