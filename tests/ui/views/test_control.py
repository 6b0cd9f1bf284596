"""AppTest of the Control messages page: compose from an example, validate, publish."""

from __future__ import annotations

import json

import pytest

from ui import backend

from ..conftest import page_app, texts


def test_examples_are_offered_and_validate(ui_settings) -> None:
    at = page_app("control").run()
    assert not at.exception
    assert at.selectbox(key="c_example").options == list(backend.control_examples())
    at.selectbox(key="c_example").select("duo-training-streaming.json").run()
    at.button(key="c_validate").click().run()
    assert texts(at.success) == ["Valid control message."]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{\n  "inputs": [\n', "not JSON"),
        ('{"inputs": [{"tasks": [{"type": "explode", "properties": {}}]}]}', "invalid control"),
    ],
)
def test_invalid_message_is_refused_and_not_published(ui_settings, text, error) -> None:
    at = page_app("control").run()
    name = at.selectbox(key="c_example").value
    at.text_area(key=f"c_text_{name}").input(text)
    at.button(key="c_publish").click().run()
    assert not at.exception
    assert any(error in e for e in texts(at.error)), texts(at.error)
    assert not at.success


def test_publish_with_broker_down_says_so(ui_settings, monkeypatch) -> None:
    import socket

    from secml.settings import get_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SECML_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    get_settings.cache_clear()
    at = page_app("control").run()
    at.button(key="c_publish").click().run()
    assert not at.exception
    assert any(f"Could not publish to 127.0.0.1:{port}" in e for e in texts(at.error))


@pytest.mark.integration
def test_publish_reaches_the_topic(kafka_broker) -> None:
    import json
    import threading

    from kafka import KafkaConsumer

    from ui import clients

    settings = kafka_broker
    at = page_app("control").run()
    at.selectbox(key="c_example").select("duo-training-payload.json").run()
    at.button(key="c_publish").click().run()
    clients.kafka_producer.clear()  # closes the cached producer (its on_release)
    assert not [t for t in threading.enumerate() if "kafka" in t.name.lower()]
    assert not at.exception
    ok = [s for s in texts(at.success) if s.startswith("Published message")]
    assert ok, texts(at.error)
    message_id = ok[0].split("`")[1]
    consumer = KafkaConsumer(
        settings.kafka_control_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
        group_id=None,
    )
    try:
        bodies = [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()
    sent = [b for b in bodies if b.get("id") == message_id]
    assert len(sent) == 1
    assert sent[0]["inputs"][0]["metadata"]["data_type"] == "payload"


@pytest.mark.integration
def test_published_message_status_follows_its_runs(kafka_broker, prefect_worker) -> None:
    """After publishing, the page follows the runs made for the message (by the consumer's
    idempotency keys): made here as the consumer makes them, so the test needs no consumer;
    a running one would reuse the same run (same key)."""
    from prefect.states import Cancelled

    from secml.control import parse_control_message
    from training.consumer.validation import plan_dispatches
    from ui import backend, clients

    settings = prefect_worker
    at = page_app("control").run()
    at.selectbox(key="c_example").select("duo-training-payload.json").run()
    at.button(key="c_publish").click().run()
    clients.kafka_producer.clear()
    assert not at.exception
    sent = at.session_state["c_published"]
    assert f"Status of message `{sent['id']}`" in texts(at.subheader)
    message = json.loads(backend.control_examples()["duo-training-payload.json"])
    plans = plan_dispatches(parse_control_message({**message, "id": sent["id"]}))
    assert sent["keys"] == [d.idempotency_key for d in plans] and plans
    with clients.prefect(str(settings.prefect_api_url)) as client:
        for d in plans:
            dep = client.read_deployment_by_name(d.deployment)
            run = client.create_flow_run_from_deployment(
                dep.id, parameters=d.parameters, idempotency_key=d.idempotency_key
            )
            client.set_flow_run_state(run.id, Cancelled(), force=True)
    at.run()
    lines = [m for m in texts(at.markdown) if m.startswith(f"**{plans[0].deployment}**")]
    assert lines and "**Cancelled**" in lines[0], texts(at.markdown) + texts(at.info)
    assert f"/runs/flow-run/{run.id}" in lines[-1]
