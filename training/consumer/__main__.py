"""``python -m training.consumer``: run the control-message consumer until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal

from secml.settings import get_settings
from training.consumer.loop import connect
from training.consumer.metrics import serve_metrics

log = logging.getLogger("training.consumer")


def main(argv: list[str] | None = None) -> None:
    """Run the consumer service until SIGINT/SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(description="Control-message consumer (Kafka → Prefect).")
    parser.add_argument("--max-batch", type=int, default=100, help="records per poll")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="flow runs created in parallel (raise it for a PostgreSQL-backed Prefect)",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    consumer = connect(settings, args.max_batch, args.concurrency)
    server = serve_metrics(consumer.metrics, settings)
    log.info("metrics on http://%s:%d/metrics", settings.host, settings.consumer_metrics_port)

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the current batch", signum)
        consumer.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        consumer.run()
    finally:
        server.shutdown()
    log.info("consumer stopped")


if __name__ == "__main__":
    main()
