"""Pure, synchronous incremental view state.

Nothing in this package awaits, reads a clock, opens a socket or logs on a hot path: time is an
explicit integer (epoch milliseconds) carried by the events, so replaying the same batches in the
same order always reaches the same state. That determinism is what makes recovery provable.

Reading order for newcomers: ``durations`` / ``windows`` (integer time maths) → ``aggregates`` and
``sketches`` (the mergeable building blocks) → ``expr`` / ``sql`` / ``spec`` (definitions) →
``view`` and ``registry`` (running state) → ``query`` (reads) → ``snapshot`` (the codec).
"""
