"""Benchmarks: each reports ratios measured in one run, never absolute targets alone."""
