"""Benchmarks: run with `make bench-*`, never by `make test` (speed and memory targets live here)."""
