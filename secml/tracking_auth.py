"""MLflow server authorization with two roles: the writer (admin) and read-only accounts.

MLflow's basic-auth app lets any authenticated user create experiments and models; this
function (named by ``authorization_function`` in the auth config that ``secml.stack`` writes)
adds a read-only role: a non-admin account may read (GET, and the search endpoints, which
MLflow's clients call with POST) and is refused every other write with 403. Unauthenticated
requests get MLflow's own 401. It runs inside the MLflow server process.
"""

from __future__ import annotations

from typing import Any

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_read(method: str, path: str) -> bool:
    """Whether a request only reads: GET/HEAD/OPTIONS, or a POST to a ``.../search`` endpoint."""
    if method.upper() in READ_METHODS:
        return True
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return method.upper() == "POST" and last.startswith("search")


def authenticate() -> Any:
    """Basic auth, then the role: admins write, other accounts only read."""
    from flask import make_response, request
    from mlflow.server.auth import authenticate_request_basic_auth, store

    auth = authenticate_request_basic_auth()
    if not hasattr(auth, "username"):  # a 401 response
        return auth
    if is_read(request.method, request.path) or store.get_user(auth.username).is_admin:
        return auth
    return make_response(
        (
            f"account {auth.username!r} is read-only: {request.method} {request.path} "
            "needs the writer account (SECML_MLFLOW_USERNAME)\n",
            403,
        )
    )
