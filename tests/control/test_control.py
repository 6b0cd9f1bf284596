"""Unit tests of the control-message contract (secml/control.py) and the examples."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secml.control import (
    ControlMessage,
    ControlMessageError,
    control_message_schema,
    message_id,
    parse_control_message,
)
from secml.settings import ROOT

EXAMPLES = sorted((ROOT / "control_messages").glob("*.json"))

BASE = {
    "inputs": [
        {
            "tasks": [
                {"type": "load", "properties": {"loader_id": "fsspec", "files": ["a/*.json"]}},
                {"type": "training", "properties": {}},
            ],
            "metadata": {"data_type": "payload", "source": "duo"},
        }
    ]
}


def _msg(**edits: object) -> dict:
    """A copy of BASE (deep) with top-level keys replaced."""
    m = copy.deepcopy(BASE)
    m.update(edits)
    return m


def _error(obj: object) -> str:
    """The error text parse_control_message raises for ``obj``."""
    with pytest.raises(ControlMessageError) as info:
        parse_control_message(obj)  # type: ignore[arg-type]
    return str(info.value)


# ---------------------------------------------------------------- examples


def test_examples_cover_every_source_task_and_data_type() -> None:
    """duo and azure × training, inference, load+train+inference × payload, streaming; nvsmi."""
    names = {p.stem for p in EXAMPLES}
    for src in ("duo", "azure"):
        for kind in ("training", "inference", "load-train-infer"):
            for dt in ("payload", "streaming"):
                assert f"{src}-{kind}-{dt}" in names
    assert "nvsmi-training-payload" in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid_and_matches_its_name(path: Path) -> None:
    """Each example parses; its source, data type and task types match its file name."""
    msg = parse_control_message(path)
    src, *kind, dt = path.stem.split("-")
    kind_s = "-".join(kind)
    for inp in msg.inputs:
        assert inp.metadata.source == src
        assert inp.metadata.data_type == dt
        assert inp.task_types[0] == "load"
        assert inp.files
    types = [t for inp in msg.inputs for t in inp.task_types]
    if kind_s == "training":
        assert "training" in types and "inference" not in types
    elif kind_s == "inference":
        assert "inference" in types and "training" not in types
    else:
        assert types.index("training") < types.index("inference")


def test_examples_have_distinct_ids() -> None:
    """No two examples share a content-derived id."""
    ids = [message_id(parse_control_message(p)) for p in EXAMPLES]
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------- accepted inputs


def test_parse_accepts_bytes_str_dict_and_path(tmp_path: Path) -> None:
    """The same message parses from every input kind to an equal model."""
    text = json.dumps(BASE)
    f = tmp_path / "m.json"
    f.write_text(text)
    parsed = [parse_control_message(x) for x in (text, text.encode(), BASE, f)]
    assert all(p == parsed[0] for p in parsed)
    assert parsed[0].inputs[0].task_types == ["load", "training"]
    assert parsed[0].inputs[0].files == ["a/*.json"]


def test_round_trip_through_to_dict() -> None:
    """to_dict() parses back to the same message, with the same id."""
    m = parse_control_message(
        _msg(id="abc-1")
        | {
            "inputs": [
                {
                    **BASE["inputs"][0],
                    "metadata": {
                        "data_type": "streaming",
                        "source": "azure",
                        "batching_options": {
                            "period": "6h",
                            "start_time": "2026-01-01T02:00:00+02:00",
                            "end_time": "2026-01-02",
                            "sampling": 0.25,
                        },
                    },
                }
            ]
        }
    )
    again = parse_control_message(m.to_dict())
    assert again == m
    assert message_id(again) == "abc-1"
    bo = again.inputs[0].metadata.batching_options
    assert bo is not None and bo.start_time is not None
    assert bo.start_time.isoformat() == "2026-01-01T00:00:00+00:00"  # converted to UTC


def test_message_id_is_the_id_or_a_stable_content_hash() -> None:
    """An explicit id wins; otherwise equal content → equal id, different content → different."""
    a = parse_control_message(BASE)
    b = parse_control_message(json.dumps(BASE, indent=4, sort_keys=True))
    assert message_id(a) == message_id(b)
    assert message_id(a).startswith("sha256:")
    other = copy.deepcopy(BASE)
    other["inputs"][0]["metadata"]["source"] = "azure"
    assert message_id(parse_control_message(other)) != message_id(a)
    assert message_id(parse_control_message(_msg(id="x-1"))) == "x-1"


@pytest.mark.parametrize("sampling", [0.5, 1, 1.0, 100, "1h", "15min"])
def test_sampling_forms_accepted(sampling: object) -> None:
    """Sampling may be a fraction, a count or an offset alias."""
    m = copy.deepcopy(BASE)
    m["inputs"][0]["metadata"]["batching_options"] = {"sampling": sampling}
    parse_control_message(m)


def test_schema_is_exported() -> None:
    """The JSON Schema names the task types and sources."""
    text = json.dumps(control_message_schema())
    for word in ("load", "training", "inference", "duo", "azure", "nvsmi", "batching_options"):
        assert word in text


# ---------------------------------------------------------------- refusals name the field


def _with_task(task: dict, index: int = 1) -> dict:
    m = copy.deepcopy(BASE)
    m["inputs"][0]["tasks"][index] = task
    return m


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            _with_task({"type": "trian", "properties": {}}),
            "inputs[0].tasks[1].type: unknown task type 'trian'; "
            "expected load, training, inference",
        ),
        (_with_task({"properties": {}}), "inputs[0].tasks[1].type: missing task type"),
        (
            _with_task({"type": "load", "properties": {"loader_id": "fsspec", "files": []}}),
            "inputs[0].tasks[1].properties.files:",
        ),
        (
            _with_task({"type": "load", "properties": {"loader_id": "s3", "files": ["x"]}}),
            "inputs[0].tasks[1].properties.loader_id: got 's3'",
        ),
        (
            _with_task({"type": "load", "properties": {"files": ["x"], "filez": 1}}),
            "inputs[0].tasks[1].properties.filez: unknown field",
        ),
        (
            _with_task({"type": "training", "properties": {}}, index=0),
            "inputs[0].tasks[0].type: 'training' task has no data",
        ),
        (_msg(inputs=[]), "inputs: List should have at least 1 item"),
        (_msg(inputs="x"), "inputs: Input should be a valid list"),
        ({}, "inputs: required field is missing"),
        (_msg(id=""), "id: String should have at least 1 character"),
        (_msg(extra=1), "extra: unknown field"),
        ([], "expected a JSON object with 'inputs', got list"),
        ("", "empty message"),
        ("{bad", "invalid JSON at line 1 column 2"),
        ('{"inputs": [\n  1,\n  ]}', "invalid JSON at line 3"),
        (b"\xff\xfe", "not UTF-8 text: invalid byte at position 0"),
    ],
)
def test_refusals_name_the_field(obj: object, expected: str) -> None:
    """Each malformed message is refused with its field path and what is wrong."""
    assert expected in _error(obj)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (
            {"data_type": "payloads", "source": "duo"},
            "inputs[0].metadata.data_type: got 'payloads'; expected 'payload' or 'streaming'",
        ),
        (
            {"data_type": "payload", "source": "okta"},
            "inputs[0].metadata.source: got 'okta'; expected 'duo', 'azure' or 'nvsmi'",
        ),
        ({"data_type": "payload"}, "inputs[0].metadata.source: required field is missing"),
        (
            {"data_type": "payload", "source": "duo", "batching_options": {"period": "fortnight"}},
            "inputs[0].metadata.batching_options.period: 'fortnight' is not a pandas offset",
        ),
        (
            {"data_type": "payload", "source": "duo", "batching_options": {"sampling": 0}},
            "inputs[0].metadata.batching_options.sampling: got 0; expected a fraction",
        ),
        (
            {"data_type": "payload", "source": "duo", "batching_options": {"sampling": 2.5}},
            "sampling: a sampling count must be a whole number",
        ),
        (
            {"data_type": "payload", "source": "duo", "batching_options": {"sampling": [1]}},
            "inputs[0].metadata.batching_options.sampling: got [1]",
        ),
        (
            {
                "data_type": "payload",
                "source": "duo",
                "batching_options": {"start_time": "2026-02-01", "end_time": "2026-01-01"},
            },
            "inputs[0].metadata.batching_options: start_time 2026-02-01T00:00:00+00:00 must be "
            "before end_time",
        ),
        (
            {"data_type": "payload", "source": "duo", "batching_options": {"start_time": "soon"}},
            "inputs[0].metadata.batching_options.start_time:",
        ),
        (
            {"data_type": "payload", "source": "duo", "batching_options": {"perod": "D"}},
            "inputs[0].metadata.batching_options.perod: unknown field",
        ),
    ],
)
def test_metadata_refusals(metadata: dict, expected: str) -> None:
    """Bad metadata and batching options name their path."""
    m = copy.deepcopy(BASE)
    m["inputs"][0]["metadata"] = metadata
    assert expected in _error(m)


def test_every_problem_is_reported_once() -> None:
    """Several mistakes are listed together, each once."""
    m = copy.deepcopy(BASE)
    m["inputs"][0]["tasks"][1]["type"] = "trian"
    m["inputs"][0]["metadata"] = {"data_type": "x", "source": "y"}
    with pytest.raises(ControlMessageError) as info:
        parse_control_message(m)
    paths = [p for p, _ in info.value.problems]
    assert paths == sorted(set(paths), key=paths.index)
    assert {"inputs[0].tasks[1].type", "inputs[0].metadata.data_type"} <= set(paths)
    assert "inputs[0].metadata.source" in paths


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    """A missing file is refused with its path."""
    missing = tmp_path / "nope.json"
    assert str(missing) in _error(missing)


def test_error_is_a_value_error() -> None:
    """Callers that catch ValueError also catch contract errors."""
    assert issubclass(ControlMessageError, ValueError)


# ---------------------------------------------------------------- properties

_task_type = st.sampled_from(["load", "training", "inference"])
# file patterns: any text but braces, which are reserved for the {data_dir} placeholder
_pattern = st.text(
    st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), min_size=1, max_size=20
)
_files = st.lists(_pattern, min_size=1, max_size=3)


@st.composite
def _messages(draw: st.DrawFn) -> dict:
    """Valid messages: every input starts with a load task."""
    inputs = []
    for _ in range(draw(st.integers(1, 3))):
        tasks = [{"type": "load", "properties": {"loader_id": "fsspec", "files": draw(_files)}}]
        for t in draw(st.lists(_task_type, max_size=3)):
            props = {"files": draw(_files)} if t == "load" else {"k": draw(st.integers())}
            tasks.append({"type": t, "properties": props})
        inputs.append(
            {
                "tasks": tasks,
                "metadata": {
                    "data_type": draw(st.sampled_from(["payload", "streaming"])),
                    "source": draw(st.sampled_from(["duo", "azure", "nvsmi"])),
                },
            }
        )
    msg: dict = {"inputs": inputs}
    if draw(st.booleans()):
        msg["id"] = draw(st.text(min_size=1, max_size=30))
    return msg


@settings(max_examples=60, deadline=None)
@given(_messages())
def test_valid_messages_round_trip(msg: dict) -> None:
    """Any valid message survives JSON bytes → model → dict → model with the same id."""
    parsed = parse_control_message(json.dumps(msg).encode())
    assert isinstance(parsed, ControlMessage)
    assert parse_control_message(parsed.to_dict()) == parsed
    assert message_id(parse_control_message(parsed.to_dict())) == message_id(parsed)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=60) | st.text(max_size=60))
def test_garbage_gives_a_contract_error_never_a_crash(raw: bytes | str) -> None:
    """Arbitrary bytes or text are refused with ControlMessageError, not another exception."""
    try:
        parse_control_message(raw)
    except ControlMessageError as exc:
        assert str(exc)
