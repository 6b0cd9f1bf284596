"""Control messages: compose from an example, validate, publish to the Kafka topic."""

from __future__ import annotations

import logging

import streamlit as st

from ui import backend, clients

log = logging.getLogger(__name__)


def render() -> None:
    """Render the Control messages page."""
    st.title("Control messages")
    settings = clients.settings()
    st.caption(
        f"Published to topic `{settings.kafka_control_topic}` on {settings.kafka_bootstrap_servers}"
    )
    examples = backend.control_examples()
    if not examples:
        st.warning(f"No example control messages in {backend.CONTROL_DIR}.")
        return
    name = st.selectbox("Start from example", list(examples), key="c_example")
    text = st.text_area("Message (JSON)", examples[name], height=360, key=f"c_text_{name}")
    c1, c2 = st.columns(2)
    validate = c1.button("Validate", key="c_validate")
    publish = c2.button("Publish", type="primary", key="c_publish")
    if not (validate or publish):
        return
    try:
        message = backend.parse_message_text(text)
    except backend.BackendError as exc:
        st.error(str(exc))
        return
    except ImportError as exc:
        st.error(f"Control message validation (secml.control) is not available: {exc}")
        return
    if validate:
        st.success("Valid control message.")
        return
    if not backend.broker_reachable(str(settings.kafka_bootstrap_servers)):
        st.error(
            f"Could not publish to {settings.kafka_bootstrap_servers}: no Kafka broker answers "
            "there (`make up` starts one; SECML_KAFKA_BOOTSTRAP_SERVERS moves it)."
        )
        return
    try:
        from training.producer import publish as publish_message

        producer = clients.kafka_producer(str(settings.kafka_bootstrap_servers))
        result = publish_message(message, settings, producer=producer, timeout_s=15.0)
    except Exception as exc:
        log.exception("publish failed")
        st.error(f"Could not publish to {settings.kafka_bootstrap_servers}: {exc}")
        return
    log.info("%s published control message %s", clients.current_user(), result)
    st.success(f"Published message `{result}` to `{settings.kafka_control_topic}`")
