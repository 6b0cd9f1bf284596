"""Every shipped control message reads data the generators write by default, wherever it runs.

``nvsmi-training-payload.json`` used to validate and then fail at run time: its glob matched no
file. Here each example is parsed and planned as the consumer plans it, after the generators ran
into a temporary ``data_dir`` (``SECML_DATA_DIR``): ``python -m secml.dfp.generator`` with its
default output (``<data_dir>/dfp``) and the ABP generator into ``<data_dir>/abp`` (where
``abp-train`` and the demo read by default); every ``files`` glob must match a file, and the
files each planned flow run gets must load.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from secml.control import DATA_DIR, ControlMessageError, parse_control_message, resolve_file
from secml.settings import ROOT, get_settings
from training.consumer import plan_dispatches

EXAMPLES = sorted((ROOT / "control_messages").glob("*.json"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh data dir, made the ``data_dir`` setting, holding small generated DFP and ABP data."""
    from secml.abp import generator as abp_gen
    from secml.dfp import generator as dfp_gen

    out = tmp_path_factory.mktemp("data")
    mp = pytest.MonkeyPatch()
    mp.setenv("SECML_DATA_DIR", str(out))
    get_settings.cache_clear()
    try:
        assert get_settings().data_dir == out
        small = ["--users", "5", "--days", "4", "--attack-days", "1", "--attacks", "5"]
        assert dfp_gen.main([*small, "--file-hours", "12"]) == 0  # default --out: <data_dir>/dfp
        assert abp_gen.main(["--out", str(out / "abp"), "--gpus", "2", "--hours", "0.5"]) == 0
        yield out
    finally:
        mp.undo()
        get_settings.cache_clear()


def test_every_example_names_its_files_under_data_dir() -> None:
    """No example depends on the working directory: each file starts with ``{data_dir}/``."""
    for path in EXAMPLES:
        for inp in parse_control_message(path).inputs:
            assert inp.raw_files and all(f.startswith(DATA_DIR + "/") for f in inp.raw_files), path


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_files_exist_after_the_generators_ran(path: Path, data_dir: Path) -> None:
    """Each glob of each example matches generated files; each planned run's data loads."""
    from secml.dfp.loader import expand_paths

    msg = parse_control_message(path)
    for inp in msg.inputs:
        for pattern in inp.files:
            assert pattern.startswith(str(data_dir))
            assert expand_paths(pattern), f"{path.name}: {pattern} matches no file"
    plans = plan_dispatches(msg)
    assert plans, f"{path.name} starts no flow run"
    for plan in plans:
        if "data" in plan.parameters:  # abp-train: the consumer resolved the globs already
            from secml.abp.model import expand

            files = expand(plan.parameters["data"])
            assert files and all(Path(f).is_relative_to(data_dir) for f in files)
            continue
        # a DFP flow gets the sub-message and resolves {data_dir} in its own process
        sub = parse_control_message(plan.parameters["message"])
        for inp in sub.inputs:
            assert expand_paths(inp.files)


def test_dfp_example_loads_through_the_flow_batcher(data_dir: Path) -> None:
    """The DFP flow's first step (expand, batch and read the files) runs on an example."""
    from training.dfp_flows import load_batches

    msg = parse_control_message(ROOT / "control_messages" / "duo-training-payload.json")
    frames = load_batches(msg.inputs[0], get_settings())
    assert frames and sum(len(f) for f in frames) > 0


def test_data_dir_placeholder(tmp_path: Path) -> None:
    """``{data_dir}`` resolves against the setting or a given dir; misplaced, it is refused."""
    assert resolve_file("{data_dir}/abp/*.jsonlines", tmp_path) == f"{tmp_path}/abp/*.jsonlines"
    assert resolve_file("s3://bucket/{x}.json", tmp_path) == "s3://bucket/{x}.json"
    assert resolve_file("a/*.json") == "a/*.json"
    assert resolve_file("{data_dir}/x") == f"{get_settings().data_dir}/x"
    base = {
        "inputs": [
            {
                "tasks": [{"type": "load", "properties": {"files": ["?"]}}],
                "metadata": {"data_type": "payload", "source": "duo"},
            }
        ]
    }
    for bad in ("data/{data_dir}/x", "{datadir}/x", "{data_dir}x"):
        base["inputs"][0]["tasks"][0]["properties"]["files"] = [bad]
        with pytest.raises(ControlMessageError, match=r"tasks\[0\]\.properties\.files: .*"):
            parse_control_message(base)
