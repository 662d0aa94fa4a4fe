"""Benchmarks: ``make bench`` measures speed and accuracy targets and writes JSON under results/bench/.

Targets live here, not in tests: tests check behaviour, benchmarks check numbers.
"""
