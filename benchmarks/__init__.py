"""Benchmarks: the load generator, the sink, and the side-by-side harness (see BENCHMARKS.md)."""
