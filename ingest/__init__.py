"""Async shells that feed the pure engine: decoding, the write-ahead log, snapshot files and the
commit pipeline that ties WAL position to applied state."""
