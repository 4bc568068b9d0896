"""Measurements. Speed claims live here and in benchmarks/README.md, never in unit tests."""
