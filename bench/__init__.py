"""Benchmarks that compare combe with what users would do instead: ``python bench/run.py [--quick]``."""
