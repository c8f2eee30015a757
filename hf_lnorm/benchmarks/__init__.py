"""Benchmarks behind ``hf-lnorm bench ...``: each prints a table and writes JSON."""
