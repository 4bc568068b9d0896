"""Kafka records as aiokafka's record parser makes them, not as ``ConsumerRecord``s.

For every record it hands out, aiokafka's fetcher builds a ``ConsumerRecord`` (a Python
dataclass of eleven fields, the headers copied into a tuple) from the record object its parser
(C, or its pure-Python twin) already made. That copy was ~0.6 µs of the ~3 µs an event cost
from Kafka into the reference views, on the event loop that also applies
(benchmarks/README.md). The parser's records carry every field tallyd reads — ``offset``,
``timestamp``, ``key``, ``value``, ``headers`` (a list of (name, bytes) pairs instead of a
tuple) — so ``getmany`` may hand them out as they are.

The hook is aiokafka's private fetch buffer (``Fetcher._records``: topic-partition → fetch
result, each with its ``PartitionRecords``): every result stored there gets a
``_consumer_record`` that returns the parser's record. Nothing else changes — the fetcher's
positions, transactions, control batches, CRC checks and ``max_records`` are its own. An
aiokafka whose buffer looks different keeps its ``ConsumerRecord``s (``plain_records`` returns
False and says so in the log): slower, the same records. ``tests/kafka/test_records.py`` fails
if the installed aiokafka does not take the hook.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from aiokafka import AIOKafkaConsumer

log = logging.getLogger("tallyd.kafka")


def _as_is(tp: Any, record: Any) -> Any:
    return record


def _hook(result: Any) -> None:
    partition = getattr(result, "_partition_records", None)
    if partition is not None and callable(getattr(partition, "_consumer_record", None)):
        # An instance attribute: the fetcher looks the method up for every record.
        partition._consumer_record = _as_is


class _PlainRecords(OrderedDict[Any, Any]):
    """The fetcher's buffer: each fetch result hooked as it is stored."""

    def __setitem__(self, key: Any, value: Any) -> None:
        _hook(value)
        super().__setitem__(key, value)


def plain_records(consumer: AIOKafkaConsumer) -> bool:
    """Make ``consumer.getmany`` hand out the parser's records (call after ``start``). False,
    with a warning, when this aiokafka's fetcher has no buffer of the expected kind."""
    fetcher: Any = getattr(consumer, "_fetcher", None)
    buffer = getattr(fetcher, "_records", None)
    if isinstance(buffer, _PlainRecords):
        return True
    if not isinstance(buffer, dict):
        log.warning(
            "event=kafka_records_hook_missing: this aiokafka's fetcher has no record buffer "
            "tallyd knows; its ConsumerRecords are used (slower, the same records)"
        )
        return False
    hooked = _PlainRecords(buffer)
    for result in hooked.values():
        _hook(result)
    fetcher._records = hooked
    return True
