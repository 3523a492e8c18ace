"""Benchmarks: `python -m bench` runs them all (`--quick` for a smaller run), `python -m bench <name>` one.

Each prints a table and writes bench/results/<name>.json (git-ignored) with the machine it ran on. They
are not tests: nothing here runs under pytest, and every number is for the machine that produced it.
"""
