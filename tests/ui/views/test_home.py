"""AppTest of the Home page: one row per service with its state."""

from __future__ import annotations

from secml.stack import SERVICES

from ..conftest import page_app, texts


def test_home_shows_every_service(ui_settings) -> None:
    at = page_app("home").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["service"]) == [s.name for s in SERVICES]
    assert {"mlflow", "prefect", "triton", "gateway", "ui", "kafka", "prometheus"} <= set(
        table["service"]
    )
    # the run directory is fresh, so nothing of this stack runs
    assert set(table["state"]) <= {"stopped", "not built yet"}
    assert table.set_index("service").loc["mlflow", "url"] == ui_settings.mlflow_tracking_uri
    assert texts(at.metric) == [f"0 / {len(SERVICES)}"]
