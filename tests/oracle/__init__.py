"""The per-event engine tallyd had before the columnar one, kept only as the test oracle."""
