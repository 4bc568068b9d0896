"""Peer engines on the reference workload, each a script run by the peers' own Python.

They install into a separate environment (``python -m venv /tmp/peers && /tmp/peers/bin/pip
install pathway quixstreams bytewax duckdb``): their pins would otherwise decide tallyd's. Each
reads the same ``shop`` orders from the same Kafka topic, computes revenue by country per minute
(count, sum, max) and prints one JSON line: events, seconds from the first record to the last
one processed, groups, and the totals the driver checks against its own reference.
"""
