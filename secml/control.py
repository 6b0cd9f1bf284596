"""Control messages: the Morpheus-shaped contract that triggers loading, training and inference.

A control message is JSON of the form::

    {"id": "optional-unique-id",
     "inputs": [{"tasks": [{"type": "load",
                            "properties": {"loader_id": "fsspec",
                                           "files": ["{data_dir}/dfp/duo-training-data/*.json"]}},
                           {"type": "training", "properties": {}}],
                 "metadata": {"data_type": "payload" | "streaming",
                              "source": "duo" | "azure" | "nvsmi",
                              "batching_options": {"period": "D", "sampling": 0.5,
                                                   "start_time": "2026-01-01T00:00:00Z",
                                                   "end_time": "2026-02-01T00:00:00Z"}}}]}

Task types are ``load``, ``training`` and ``inference``; a ``training`` or ``inference`` task needs
a ``load`` task before it in the same input. ``payload`` data skips the rolling window,
``streaming`` data goes through it. A file may start with ``{data_dir}/``, the ``data_dir``
setting, resolved by the process that reads the files (:func:`resolve_file`).
:func:`parse_control_message` is the one entry point: it accepts bytes, text, a dict or a file
path and raises :class:`ControlMessageError` whose message names the field path that is wrong
(``inputs[0].tasks[1].type: unknown task type 'trian'; ...``).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

TASK_TYPES: tuple[str, ...] = ("load", "training", "inference")
DATA_TYPES: tuple[str, ...] = ("payload", "streaming")
SOURCES: tuple[str, ...] = ("duo", "azure", "nvsmi")
LOADER_IDS: tuple[str, ...] = ("fsspec",)
MAX_ID_LENGTH = 200
DATA_DIR = "{data_dir}"  # placeholder a load task's file may start with (see resolve_file)
SAMPLING_HINT = "expected a fraction in (0, 1], a row count >= 1 or an offset alias like '1h'"

DataType = Literal["payload", "streaming"]
Source = Literal["duo", "azure", "nvsmi"]


class ControlMessageError(ValueError):
    """A control message that cannot be used; ``str(err)`` names each wrong field path."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" if path else msg for path, msg in problems))


class _Strict(BaseModel):
    """Base for contract models: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LoadProperties(_Strict):
    """Where a ``load`` task reads from: fsspec URLs or globs; ``{data_dir}/`` may start one."""

    loader_id: Literal["fsspec"] = "fsspec"
    files: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)

    @field_validator("files")
    @classmethod
    def _placeholder(cls, v: list[str]) -> list[str]:
        """``{data_dir}`` is the one placeholder, and only as the first path component."""
        for f in v:
            if (f.startswith("{") or DATA_DIR in f) and not f.startswith(DATA_DIR + "/"):
                raise ValueError(
                    f"{f!r}: the only placeholder is {DATA_DIR}, at the start "
                    f"(e.g. '{DATA_DIR}/dfp/duo-training-data/DUO_*.json')"
                )
        return v


class LoadTask(_Strict):
    """Load the files named in ``properties.files``."""

    type: Literal["load"]
    properties: LoadProperties


class TrainingTask(_Strict):
    """Train models on the loaded data; ``properties`` are passed to the training flow."""

    type: Literal["training"]
    properties: dict[str, Any] = Field(default_factory=dict)


class InferenceTask(_Strict):
    """Score the loaded data with the production models; ``properties`` go to the flow."""

    type: Literal["inference"]
    properties: dict[str, Any] = Field(default_factory=dict)


Task = Annotated[LoadTask | TrainingTask | InferenceTask, Field(discriminator="type")]


class BatchingOptions(_Strict):
    """Overrides of the batcher: period, time window and sampling."""

    period: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    sampling: int | float | str | None = None

    @field_validator("period")
    @classmethod
    def _period_is_offset(cls, v: str | None) -> str | None:
        """A period must be a pandas offset alias such as ``D`` or ``6h``."""
        if v is not None:
            _check_offset(v)
        return v

    @field_validator("start_time", "end_time")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        """Naive times are read as UTC; all times are kept in UTC."""
        if v is None:
            return v
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @field_validator("sampling")
    @classmethod
    def _sampling(cls, v: int | float | str | None) -> int | float | str | None:
        """Sampling is a fraction in (0, 1], a row count >= 1, or a resampling offset alias."""
        if v is None:
            return v
        if isinstance(v, str):
            _check_offset(v)
            return v
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"got {v}; {SAMPLING_HINT}")
        if v > 1 and v != int(v):
            raise ValueError(f"a sampling count must be a whole number, got {v}")
        return v

    @model_validator(mode="after")
    def _window(self) -> BatchingOptions:
        """The time window must not be empty."""
        if self.start_time and self.end_time and self.start_time >= self.end_time:
            raise ValueError(
                f"start_time {self.start_time.isoformat()} must be before "
                f"end_time {self.end_time.isoformat()}"
            )
        return self


class Metadata(_Strict):
    """What the data is (``payload`` or ``streaming``), where it comes from, how to batch it."""

    data_type: DataType
    source: Source
    batching_options: BatchingOptions | None = None


class ControlInput(_Strict):
    """One unit of work: an ordered list of tasks over one data source."""

    tasks: list[Task] = Field(min_length=1)
    metadata: Metadata

    @property
    def task_types(self) -> list[str]:
        """The task types in order, e.g. ``['load', 'training']``."""
        return [t.type for t in self.tasks]

    @property
    def files(self) -> list[str]:
        """Every file or glob named by the load tasks of this input, ``{data_dir}`` resolved
        (:func:`resolve_file`) by the process that reads them."""
        return [resolve_file(f) for f in self.raw_files]

    @property
    def raw_files(self) -> list[str]:
        """The load tasks' files as written in the message (``{data_dir}`` not resolved)."""
        return [f for t in self.tasks if isinstance(t, LoadTask) for f in t.properties.files]


class ControlMessage(_Strict):
    """A control message: an optional id and one or more inputs."""

    id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)] | None = None
    inputs: list[ControlInput] = Field(min_length=1)

    def to_dict(self) -> dict[str, Any]:
        """The message as plain JSON-able data (times as ISO 8601 strings, unset fields dropped)."""
        return self.model_dump(mode="json", exclude_none=True)


def resolve_file(pattern: str, data_dir: str | Path | None = None) -> str:
    """``pattern`` with a leading ``{data_dir}`` replaced by ``data_dir`` (default: the
    ``data_dir`` setting, ``SECML_DATA_DIR``, else ``<run_dir>/data``); others unchanged.

    The shipped examples read what the generators write there by default
    (``python -m secml.dfp.generator`` → ``{data_dir}/dfp``, the ABP demo → ``{data_dir}/abp``),
    so they work whatever the working directory of the process that loads them.
    """
    if not pattern.startswith(DATA_DIR + "/"):
        return pattern
    if data_dir is None:
        from secml.settings import get_settings

        data_dir = get_settings().data_dir
    return str(data_dir).rstrip("/") + pattern[len(DATA_DIR) :]


def control_message_schema() -> dict[str, Any]:
    """The JSON Schema of a control message (for the UI and for documentation)."""
    return ControlMessage.model_json_schema()


def parse_control_message(obj: bytes | bytearray | str | dict | Path) -> ControlMessage:
    """Parse and validate a control message from bytes, JSON text, a dict or a file path.

    Raises:
        ControlMessageError: naming each wrong field path (or the JSON line/column).
    """
    if isinstance(obj, Path):
        try:
            obj = obj.read_bytes()
        except OSError as exc:
            raise ControlMessageError(
                [("", f"cannot read control message file {obj}: {exc}")]
            ) from None
    if isinstance(obj, bytes | bytearray):
        try:
            obj = bytes(obj).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ControlMessageError(
                [("", f"not UTF-8 text: invalid byte at position {exc.start}")]
            ) from None
    if isinstance(obj, str):
        if not obj.strip():
            raise ControlMessageError([("", "empty message; expected a JSON object")])
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise ControlMessageError(
                [("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")]
            ) from None
    if not isinstance(obj, dict):
        raise ControlMessageError(
            [("", f"expected a JSON object with 'inputs', got {type(obj).__name__}")]
        )
    try:
        msg = ControlMessage.model_validate(obj)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        raise ControlMessageError(list(dict.fromkeys(problems))) from None
    _check_task_order(msg)
    return msg


def message_id(msg: ControlMessage) -> str:
    """The message's own ``id``, else ``sha256:<hex>`` of its canonical JSON content."""
    if msg.id:
        return msg.id
    content = msg.model_dump(mode="json", exclude_none=True, exclude={"id"})
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _check_task_order(msg: ControlMessage) -> None:
    """A training or inference task needs a load task earlier in the same input."""
    problems = []
    for i, inp in enumerate(msg.inputs):
        loaded = False
        for j, task in enumerate(inp.tasks):
            if task.type == "load":
                loaded = True
            elif not loaded:
                problems.append(
                    (
                        f"inputs[{i}].tasks[{j}].type",
                        f"'{task.type}' task has no data: put a 'load' task before it",
                    )
                )
    if problems:
        raise ControlMessageError(problems)


def _check_offset(value: str) -> None:
    """Raise ValueError unless ``value`` is a pandas offset alias."""
    from pandas.tseries.frequencies import to_offset

    try:
        to_offset(value)
    except (ValueError, TypeError):
        hint = "e.g. 'D', '6h', '15min'"
        raise ValueError(f"{value!r} is not a pandas offset alias ({hint})") from None


def _path(loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into ``inputs[0].tasks[1].properties.files``."""
    out = ""
    prev: Any = None
    prevprev: Any = None
    for part in loc:
        skip_tag = isinstance(prev, int) and prevprev == "tasks" and part in TASK_TYPES
        skip_union = isinstance(part, str) and part in ("int", "float", "str")
        if skip_tag or (skip_union and prev in ("sampling",)):
            prevprev, prev = prev, part
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
        prevprev, prev = prev, part
    return out


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    """One pydantic error as (field path, what is wrong and what is expected)."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    path = _path(loc)
    if kind == "union_tag_invalid":
        return (
            f"{path}.type",
            f"unknown task type {ctx.get('tag')!r}; expected {', '.join(TASK_TYPES)}",
        )
    if kind == "union_tag_not_found":
        return (f"{path}.type", f"missing task type; expected one of {', '.join(TASK_TYPES)}")
    if loc and loc[-1] in ("int", "float", "str") and len(loc) > 1 and loc[-2] == "sampling":
        return (path, f"got {err.get('input')!r}; {SAMPLING_HINT}")
    if kind == "extra_forbidden":
        return (path, "unknown field (check the spelling)")
    if kind == "missing":
        return (path, "required field is missing")
    if kind == "literal_error":
        return (path, f"got {err.get('input')!r}; expected {ctx.get('expected')}")
    text = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return (path, text)
