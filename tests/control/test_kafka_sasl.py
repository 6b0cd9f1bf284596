"""Kafka SASL/PLAIN client configuration: every Kafka client takes it from the settings.

Unit tests, no broker: the local broker (noida-db) has no SASL, and the compose broker that
requires it does not run here. kafka-python's own clients are built from the configuration
(``api_version`` given, so they do not connect) to show it accepts every key; the wiring tests
capture the arguments each of our client factories passes to kafka-python (a spy, not a fault).
"""

from __future__ import annotations

from typing import Any

import pytest

from secml.settings import Settings

SASL = {"kafka_sasl_username": "secml", "kafka_sasl_password": "s3cret-pw"}


def _settings(**extra: Any) -> Settings:
    return Settings(kafka_bootstrap_servers="kafka:9092", **extra)


def test_without_credentials_only_the_bootstrap_servers() -> None:
    assert _settings().kafka_client_config() == {"bootstrap_servers": "kafka:9092"}


def test_with_credentials_sasl_plain() -> None:
    cfg = _settings(**SASL).kafka_client_config()
    assert cfg == {
        "bootstrap_servers": "kafka:9092",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "secml",
        "sasl_plain_password": "s3cret-pw",
    }
    assert "s3cret-pw" not in repr(_settings(**SASL))  # a secret in settings, not in logs


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"kafka_sasl_username": "secml"}, "SECML_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_password": "pw"}, "SECML_KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_username": "", "kafka_sasl_password": "pw"}, "SECML_KAFKA_SASL_USERNAME"),
    ],
)
def test_half_set_credentials_name_what_is_missing(given: dict, missing: str) -> None:
    with pytest.raises(ValueError, match=missing):
        _settings(**given).kafka_client_config()


def test_kafka_python_accepts_the_configuration() -> None:
    from kafka import KafkaConsumer, KafkaProducer

    cfg = _settings(**SASL).kafka_client_config()
    producer = KafkaProducer(**cfg, api_version=(3, 8, 0))
    consumer = KafkaConsumer(**cfg, api_version=(3, 8, 0))
    try:
        for client in (producer, consumer):
            assert client.config["security_protocol"] == "SASL_PLAINTEXT"
            assert client.config["sasl_mechanism"] == "PLAIN"
            assert client.config["sasl_plain_username"] == "secml"
    finally:
        producer.close(timeout=0)
        consumer.close()


def _spy(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[dict[str, Any]]:
    """Replace ``module.<name>`` by a recorder of its keyword arguments (methods do nothing)."""
    calls: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            calls.append(kwargs)

        def __getattr__(self, attr: str) -> Any:
            return lambda *args, **kwargs: []

    monkeypatch.setattr(module, name, Recorder)
    return calls


def test_every_client_factory_passes_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    """The UI/CLI producer, the consumer, its topic admin and its dead-letter producer."""
    import kafka

    from training.consumer import ControlConsumer, DispatchLedger
    from training.producer import make_producer

    s = _settings(**SASL)
    want = s.kafka_client_config()
    producers = _spy(monkeypatch, kafka, "KafkaProducer")
    consumers = _spy(monkeypatch, kafka, "KafkaConsumer")
    admins = _spy(monkeypatch, kafka, "KafkaAdminClient")
    make_producer(s)
    ControlConsumer(s, dispatcher=lambda d: "run", ledger=DispatchLedger("sqlite://"))
    assert (len(producers), len(consumers), len(admins)) == (2, 1, 1)
    for kwargs in producers + consumers + admins:
        assert {k: kwargs.get(k) for k in want} == want


def test_compose_broker_requires_sasl_and_clients_have_the_account() -> None:
    """In compose every client-facing listener is SASL_PLAINTEXT with PLAIN, and the platform's
    services get the account (the password is required: ``${VAR:?}``)."""
    import yaml

    from secml.settings import ROOT

    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text(encoding="utf-8"))
    env = compose["services"]["kafka"]["environment"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    clients = [name for name in protocols if name != env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
    assert clients and all(protocols[name] == "SASL_PLAINTEXT" for name in clients), protocols
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "PLAIN"
    for name in clients:
        jaas = env[f"KAFKA_LISTENER_NAME_{name.replace('_', '__')}_PLAIN_SASL_JAAS_CONFIG"]
        assert "PlainLoginModule required" in jaas and "SECML_KAFKA_SASL_PASSWORD:?" in jaas
    consumer_env = compose["services"]["consumer"]["environment"]
    assert consumer_env["SECML_KAFKA_SASL_PASSWORD"].startswith("${SECML_KAFKA_SASL_PASSWORD:?")
    assert consumer_env["SECML_KAFKA_SASL_USERNAME"] == "${SECML_KAFKA_SASL_USERNAME:-secml}"
    assert "--command-config" in compose["services"]["kafka"]["healthcheck"]["test"][1]
