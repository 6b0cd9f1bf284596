"""Experiment files: the schema's errors name the field; plugins come from entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from secml.experiments import plugins
from secml.experiments.spec import SpecError, load_spec, parse
from secml.settings import ROOT
from training import experiment as cli

EXAMPLE = ROOT / "examples" / "experiments" / "robustness.yaml"


def _doc() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_the_example_file_is_valid() -> None:
    spec = load_spec(EXAMPLE)
    assert [d.kind for d in spec.detectors] == ["abp-xgboost", "dfp-autoencoder"]
    assert spec.stages == ["train", "attack", "report"]


def test_builtin_plugins_are_entry_points() -> None:
    """The platform registers its own plugins through the same entry-point groups."""
    for group, names in plugins.BUILTIN.items():
        eps = {ep.name: ep.value for ep in entry_points(group=plugins.GROUPS[group])}
        assert eps.items() >= names.items(), group


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["detectors"][0].update(kind="abp-xgbost"),
         "detectors[0].kind: no detector plugin named 'abp-xgbost'"),
        (lambda d: d["detectors"][1].update(dataset="dou"),
         "detectors[1].dataset: no dataset named 'dou'"),
        (lambda d: d["attacks"][2].update(detector="nope"),
         "attacks[2].detector: no detector named 'nope'"),
        (lambda d: d["datasets"][0].pop("name"), "datasets[0].name: Field required"),
        (lambda d: d["runner"].update(workers=0),
         "runner.workers: Input should be greater than or equal to 1"),
        (lambda d: d["detectors"][0].update(paramz={}),
         "detectors[0].paramz: Extra inputs are not permitted"),
        (lambda d: d.update(stages=["attack", "train"]), "stages: must run in the order"),
        (lambda d: d.update(stages=["deploy"]), "stages[0]: Input should be 'train'"),
        (lambda d: d["attacks"].append(dict(d["attacks"][0])),
         "attacks[3].name: 'evasion' is used twice"),
        (lambda d: d.update(name="has space"), "name: String should match pattern"),
    ],
)  # fmt: skip
def test_a_broken_file_names_the_field(edit, message) -> None:
    doc = _doc()
    edit(doc)
    with pytest.raises(SpecError) as exc:
        parse(doc, "exp.yaml")
    assert f"exp.yaml: {message}" in str(exc.value)


def test_cli_validate_reports_the_field(tmp_path: Path, capsys) -> None:
    doc = _doc()
    doc["attacks"][0]["kind"] = "abp-evasoin"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert cli.main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: attacks[0].kind: no attack plugin named 'abp-evasoin'" in err
    assert "abp-evasion" in err  # what is installed is listed


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets: [\n  - {name: a\n")
    with pytest.raises(SpecError, match=r"bad.yaml: line \d+, column \d+ invalid YAML"):
        load_spec(bad)


def test_unknown_plugin_params_name_the_plugin() -> None:
    with pytest.raises(plugins.PluginError, match="attack plugin 'abp-evasion': bad params"):
        plugins.make("attacks", "abp-evasion", 0, {"confgs": 3})
    with pytest.raises(plugins.PluginError, match="installed: abp-evasion"):
        plugins.load("attacks", "missing")
