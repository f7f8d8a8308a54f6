"""Benchmark scripts (not tests): ``benchmarks/run.py`` and ``benchmarks/lineage_bench.py``."""
