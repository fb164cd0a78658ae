"""Retention's benchmark harness, run by `make bench` (`python -m bench`).

Benchmarks register themselves with `bench.registry.benchmark`; each returns named figures, and
may declare targets and ratios against another benchmark measured in the same run. The runner
(`bench.__main__`) writes docs/benchmarks.md with the figures and the machine they ran on.
"""
