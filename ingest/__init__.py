"""Async shells that feed the pure engine: the sources (HTTP, Kafka, files) behind one protocol
(``source``), decoding, the write-ahead log, snapshot files, and the committer (``commit``) — the
one owner of the lock around view state, which ties every position to the state it reflects."""
