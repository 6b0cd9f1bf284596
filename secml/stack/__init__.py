"""The local launcher: start, check, list and stop the platform's servers as local processes.

``make up`` / ``make down`` / ``make status`` / ``make logs`` call ``python -m secml.stack``, and
the test fixtures and benchmarks use the same :class:`Stack` on free ports, so services are
defined in one place. The package reads top-down:

- :mod:`~secml.stack.services`: the service specs (command, ports, readiness, dependencies);
- :mod:`~secml.stack.preparation`: what a server needs before it starts (files, environment);
- :mod:`~secml.stack.readiness`: the health check of each server;
- :mod:`~secml.stack.launcher`: :class:`Stack` (up in dependency order, status, down);
- :mod:`~secml.stack.processes`: process groups: PIDs, memory, signals;
- :mod:`~secml.stack.cli`: the command line.
"""

from secml.stack.cli import format_table, main
from secml.stack.launcher import ServiceState, Stack, service_states
from secml.stack.preparation import StackError
from secml.stack.processes import (
    VENV_BIN,
    child_env,
    free_port,
    free_ports,
    group_alive,
    group_pss_mb,
    group_rss_mb,
    group_stats,
    port_free,
    tree_pids,
)
from secml.stack.readiness import mlflow_ready
from secml.stack.services import BY_NAME, SERVICES, Service

__all__ = [
    "BY_NAME",
    "SERVICES",
    "VENV_BIN",
    "Service",
    "ServiceState",
    "Stack",
    "StackError",
    "child_env",
    "format_table",
    "group_alive",
    "group_pss_mb",
    "group_rss_mb",
    "group_stats",
    "main",
    "mlflow_ready",
    "free_port",
    "free_ports",
    "port_free",
    "service_states",
    "tree_pids",
]
