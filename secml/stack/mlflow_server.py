"""``mlflow server`` that becomes its web server instead of waiting on it.

``mlflow server`` imports all of MLflow (~270 MiB RSS), starts uvicorn as a child process and
then only waits for it and forwards signals. This runs the same command line through MLflow's own
CLI (migrations, basic-auth bootstrap, the environment it hands the server), but replaces the
process with uvicorn (``exec``) at the point where MLflow would spawn it, so the idle parent and
its memory are gone and stop signals reach uvicorn directly. Only valid without MLflow's job
runner (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``, as :func:`mlflow_env` sets), which would
otherwise start after the spawn.

The web server runs with ``pyarrow`` made unimportable (:data:`UNUSED`): MLflow's dataset
classes import pandas, which imports pyarrow when it is installed, and the tracking server never
uses it (only the HDFS artifact store would): 37 MiB less RSS; scipy too
(:data:`MLFLOW_UNUSED`). The gateway runs under the :data:`UVICORN` program
(``secml.stack.services``): it never uses pyarrow either, and pandas (whose ``str`` dtype falls
back to Python storage without it) would map ~38 MiB of it.

Usage: ``python -m secml.stack.mlflow_server [mlflow server options]``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

UNUSED = ("pyarrow",)
# and for MLflow's web server: scipy, which mlflow.models imports only to recognise sparse
# matrices (guarded: without it MLflow takes none), ~7 MiB
MLFLOW_UNUSED = (*UNUSED, "scipy")


def uvicorn_program(unused: tuple[str, ...]) -> str:
    """uvicorn's command line with ``unused`` modules blocked (no secml import: it would cost
    RSS too)."""
    return (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({unused!r}))\n"
        "sys.argv[0] = 'uvicorn'\n"
        "from uvicorn.main import main\n"
        "main()\n"
    )


UVICORN = uvicorn_program(UNUSED)  # the gateway's (secml.stack.services)


def _exec(cmd: list[str], extra_env: dict[str, str] | None = None, **_: Any) -> NoReturn:
    if cmd[1:3] == ["-m", "uvicorn"]:
        cmd = [cmd[0], "-c", uvicorn_program(MLFLOW_UNUSED), *cmd[3:]]
    os.execve(cmd[0], cmd, os.environ | (extra_env or {}))


def main(argv: list[str] | None = None) -> None:
    """Run ``mlflow server`` with ``argv``, exec'ing into the web server it builds."""
    if os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "").lower() not in ("false", "0"):
        raise SystemExit("needs MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false (the job runner)")
    import mlflow.server
    from mlflow.cli import cli

    mlflow.server._exec_cmd = _exec  # the one call that spawns the server
    cli(["server", *(sys.argv[1:] if argv is None else argv)], prog_name="mlflow")


if __name__ == "__main__":
    main()
