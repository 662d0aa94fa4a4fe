"""Devices without hardware: real OpenSSH servers on loopback, used by tests, benchmarks and ``make nightly``."""
