"""Validation: a record's bytes → a control message → the flow runs it needs, or what is wrong.

:func:`plan_dispatches` maps each (source, task) of a valid message to a Prefect deployment and
gives each run only its own tasks; a pair no deployment serves, or a training property that is
not a flow parameter, makes the message invalid (it is dead-lettered, never retried).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secml.control import ControlMessage, ControlMessageError, message_id, parse_control_message

# (source, task type) → Prefect deployment "<flow-name>/<deployment-name>".
DEPLOYMENTS: dict[tuple[str, str], str] = {
    ("duo", "training"): "dfp-train/default",
    ("azure", "training"): "dfp-train/default",
    ("duo", "inference"): "dfp-infer/default",
    ("azure", "inference"): "dfp-infer/default",
    ("nvsmi", "training"): "abp-train/default",
}
# Parameters of training/abp_flow.py:abp_train that a training task's properties may set.
ABP_TRAIN_PROPERTIES = frozenset(
    {
        "labels",
        "split_by",
        "test_fraction",
        "n_estimators",
        "max_depth",
        "learning_rate",
        "seed",
        "use_store_labels",
        "min_f1",
    }
)


@dataclass(frozen=True)
class Dispatch:
    """One flow run to create for one control message."""

    message_id: str
    deployment: str
    parameters: dict[str, Any]

    @property
    def idempotency_key(self) -> str:
        """The Prefect idempotency key: the same message never makes a second run."""
        return f"control:{self.message_id}:{self.deployment}"


def plan_dispatches(
    msg: ControlMessage, deployments: Mapping[tuple[str, str], str] = DEPLOYMENTS
) -> list[Dispatch]:
    """The flow runs a message needs: one per deployment, each given only its own tasks.

    DFP flows take ``message``: an input ``[load, training, inference]`` on ``duo`` yields a
    ``dfp-train`` run with ``[load, training]`` and a ``dfp-infer`` run with ``[load, inference]``.
    ``abp-train`` takes ``data`` (the load tasks' files) plus the training task's properties,
    which must be parameters of that flow. A load-only message needs no run. Raises
    ControlMessageError when no deployment serves a (source, task) pair or a property is unknown.
    """
    mid = message_id(msg)
    data = msg.to_dict()
    dfp: dict[str, list[dict[str, Any]]] = {}
    abp: dict[str, dict[str, Any]] = {}
    problems = []
    for i, inp in enumerate(msg.inputs):
        source = inp.metadata.source
        for kind in ("training", "inference"):
            if kind not in inp.task_types:
                continue
            j = inp.task_types.index(kind)
            name = deployments.get((source, kind))
            if name is None:
                served = sorted(f"{s}/{k}" for s, k in deployments)
                problems.append(
                    (
                        f"inputs[{i}].tasks[{j}].type",
                        f"no deployment runs {kind!r} for source {source!r}; "
                        f"supported: {', '.join(served)}",
                    )
                )
                continue
            raw = data["inputs"][i]
            if source == "nvsmi":
                params = abp.setdefault(name, {"data": []})
                params["data"].extend(inp.files)
                for k, v in raw["tasks"][j].get("properties", {}).items():
                    if k not in ABP_TRAIN_PROPERTIES:
                        problems.append(
                            (
                                f"inputs[{i}].tasks[{j}].properties.{k}",
                                f"not a parameter of abp-train; expected one of "
                                f"{', '.join(sorted(ABP_TRAIN_PROPERTIES))}",
                            )
                        )
                    params[k] = v
                continue
            tasks = [t for t in raw["tasks"] if t["type"] in ("load", kind)]
            dfp.setdefault(name, []).append({**raw, "tasks": tasks})
    if problems:
        raise ControlMessageError(problems)
    plans = [Dispatch(mid, n, {"message": {"id": mid, "inputs": ins}}) for n, ins in dfp.items()]
    return plans + [Dispatch(mid, n, params) for n, params in abp.items()]


def validate(
    raw: bytes | None, deployments: Mapping[tuple[str, str], str] = DEPLOYMENTS
) -> list[Dispatch]:
    """The runs a record's value asks for; raises ControlMessageError naming what is wrong."""
    return plan_dispatches(parse_control_message(raw if raw is not None else b""), deployments)
