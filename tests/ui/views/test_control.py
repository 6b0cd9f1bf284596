"""AppTest of the Control messages page: compose from an example, validate, publish."""

from __future__ import annotations

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
