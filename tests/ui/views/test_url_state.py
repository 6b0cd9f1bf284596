"""Every page keeps its choices in the URL: a deep link reopens them, a change is written back,
a bad value is ignored with a warning naming it (the Detections page has its own tests)."""

from __future__ import annotations

import socket
import uuid

import pytest

from secml.monitoring import load_dashboards
from secml.settings import get_settings
from ui import backend

from ..conftest import frame_with, make_model, page_app, texts
from .test_models import registry  # noqa: F401  (fixture)


def _qp(at, name: str) -> str | None:
    """One URL query parameter of the AppTest run (a single value)."""
    value = at.query_params.get(name)
    return value[-1] if isinstance(value, list) else value


def _closed_port() -> int:
    """A local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deep_link(module: str, **params: str):
    """An AppTest of ``module`` opened with ``params`` in its URL, run once."""
    at = page_app(module)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_labels_detector_filter_round_trips(seeded_store) -> None:
    df = seeded_store.detections()
    by_score = dict(zip(df["score"], df["detection_id"].astype(int), strict=True))
    seeded_store.add_label(by_score[4.7], "true_positive", user="alice")
    seeded_store.add_label(by_score[0.98], "false_positive", user="bob")
    at = _deep_link("labels", detector="abp")
    assert not at.exception
    assert at.multiselect(key="l_detector").value == ["abp"]
    assert set(frame_with(at, "precision")["detector"]) == {"abp"}
    assert _qp(at, "detector") == "abp"
    at.multiselect(key="l_detector").unselect("abp").select("dfp").run()
    assert set(frame_with(at, "precision")["detector"]) == {"dfp"}
    assert _qp(at, "detector") == "dfp", "a change is written to the URL"
    at.multiselect(key="l_detector").unselect("dfp").run()
    assert set(frame_with(at, "precision")["detector"]) == {"abp", "dfp"}
    assert _qp(at, "detector") is None, "the default (all) leaves the URL clean"


def test_labels_unknown_detector_is_named(seeded_store) -> None:
    at = _deep_link("labels", detector="abp,gpu-miner")
    assert not at.exception
    assert any("detector='abp,gpu-miner'" in w and "gpu-miner" in w for w in texts(at.warning))
    assert at.multiselect(key="l_detector").value == ["abp"], "the known part is kept"


def test_monitoring_dashboard_and_window_round_trip(ui_settings, monkeypatch) -> None:
    monkeypatch.setenv("SECML_PROMETHEUS_URL", f"http://127.0.0.1:{_closed_port()}")
    get_settings.cache_clear()
    titles = [b["title"] for b in load_dashboards()]
    if len(titles) < 2:
        pytest.skip("needs two dashboards in monitoring/grafana/dashboards")
    at = _deep_link("monitoring", dashboard=titles[1], window="6h")
    assert not at.exception
    assert at.selectbox(key="mon_board").value == titles[1]
    assert at.selectbox(key="mon_window").value == "6 hours"
    assert not at.warning
    at.selectbox(key="mon_window").select("15 minutes").run()
    assert _qp(at, "window") == "15m" and _qp(at, "dashboard") == titles[1]
    at.selectbox(key="mon_board").select(titles[0]).run()
    assert _qp(at, "dashboard") is None, "the default dashboard leaves the URL clean"


def test_monitoring_bad_values_are_named(ui_settings, monkeypatch) -> None:
    monkeypatch.setenv("SECML_PROMETHEUS_URL", f"http://127.0.0.1:{_closed_port()}")
    get_settings.cache_clear()
    titles = [b["title"] for b in load_dashboards()]
    if not titles:
        pytest.skip("no dashboards in monitoring/grafana/dashboards")
    at = _deep_link("monitoring", dashboard="Nope", window="3d")
    assert not at.exception
    warnings = texts(at.warning)
    assert any("dashboard='Nope'" in w for w in warnings), warnings
    assert any("window='3d'" in w and "15m, 1h, 6h, 24h" in w for w in warnings), warnings
    assert at.selectbox(key="mon_board").value == titles[0]
    assert at.selectbox(key="mon_window").value == "1 hour"


def test_control_example_round_trips(ui_settings) -> None:
    examples = list(backend.control_examples())
    at = _deep_link("control", example=examples[-1])
    assert not at.exception
    assert at.selectbox(key="c_example").value == examples[-1]
    assert (
        at.text_area(key=f"c_text_{examples[-1]}").value == backend.control_examples()[examples[-1]]
    )
    at.selectbox(key="c_example").select(examples[1]).run()
    assert _qp(at, "example") == examples[1]
    bad = _deep_link("control", example="missing.json")
    assert any("example='missing.json'" in w for w in texts(bad.warning))
    assert bad.selectbox(key="c_example").value == examples[0]


def test_training_bad_values_are_named_even_with_prefect_down(ui_settings, monkeypatch) -> None:
    monkeypatch.setenv("SECML_PREFECT_API_URL", f"http://127.0.0.1:{_closed_port()}/api")
    get_settings.cache_clear()
    at = _deep_link("training", deployment="nope/default", mode="fax")
    assert not at.exception
    warnings = texts(at.warning)
    assert any("deployment='nope/default'" in w for w in warnings), warnings
    assert any("mode='fax'" in w and "parameters, message" in w for w in warnings), warnings


@pytest.mark.integration
def test_training_deep_link_opens_deployment_mode_and_example(prefect_worker) -> None:
    at = _deep_link(
        "training",
        deployment="dfp-infer/default",
        mode="message",
        example="duo-inference-payload.json",
    )
    assert not at.exception, at.exception
    assert not at.warning, texts(at.warning)
    assert at.selectbox(key="t_deployment").value == "dfp-infer/default"
    assert at.radio(key="t_mode").value == "control message"
    assert at.selectbox(key="t_example").value == "duo-inference-payload.json"
    at.radio(key="t_mode").set_value("parameters").run()
    assert _qp(at, "mode") is None and _qp(at, "example") is None
    assert _qp(at, "deployment") == "dfp-infer/default"


def test_compare_unknown_model_and_versions_are_named(registry, abp_registered) -> None:  # noqa: F811
    name, (v1, v2) = abp_registered["name"], abp_registered["versions"]
    at = _deep_link("compare", model=name, versions=f"{v1},999")
    assert not at.exception
    assert any("versions=" in w and "999" in w for w in texts(at.warning)), texts(at.warning)
    assert at.multiselect(key="cmp_versions").value == [v1]
    at.multiselect(key="cmp_versions").select(v2).run()
    assert _qp(at, "versions") == f"{v1},{v2}" and _qp(at, "model") == name
    bad = _deep_link("compare", model="no-such-model", versions="x")
    warnings = texts(bad.warning)
    assert any("model='no-such-model'" in w for w in warnings), warnings
    assert any("versions='x'" in w for w in warnings), warnings


def test_detections_unknown_choice_is_named(seeded_store) -> None:
    at = _deep_link("detections", detector="dfp,xgb", sort="colour")
    assert not at.exception
    warnings = texts(at.warning)
    assert any("detector='dfp,xgb'" in w and "xgb is not one of" in w for w in warnings), warnings
    assert any("sort='colour'" in w for w in warnings), warnings
    assert at.multiselect(key="f_detector").value == ["dfp"]
    assert at.selectbox(key="f_sort").value == "last_seen"


def test_home_window_round_trips(seeded_store) -> None:
    at = _deep_link("home", window="30d")
    assert not at.exception, at.exception
    assert at.selectbox(key="home_window").value == "30 days"
    at.selectbox(key="home_window").select("all time").run()
    assert _qp(at, "window") == "all"
    bad = _deep_link("home", window="forever")
    assert any("window='forever'" in w for w in texts(bad.warning)), texts(bad.warning)
    assert bad.selectbox(key="home_window").value == "7 days"


def test_models_filter_and_model_round_trip(registry) -> None:  # noqa: F811
    tag = uuid.uuid4().hex[:6]
    names = [f"dfp-duo-{tag}-{i}" for i in range(2)]
    for n in names:
        make_model(registry, n, [{"val_loss": 1.0}])
    at = _deep_link("models", filter=tag, model=names[1])
    assert not at.exception
    assert at.text_input(key="m_filter").value == tag
    assert list(frame_with(at, "name")["name"]) == names
    assert at.selectbox(key="m_name").value == names[1]
    assert _qp(at, "filter") == tag and _qp(at, "model") == names[1]
    bad = _deep_link("models", filter=tag, model="dfp-duo-gone")
    assert any("model='dfp-duo-gone'" in w for w in texts(bad.warning)), texts(bad.warning)
    assert bad.selectbox(key="m_name").value == names[0]
