"""Benchmarks: run against a real gateway process, compared with psql in the same run."""
