"""Atelier's benchmark: the real bot against the fakes from ``tests/``; run ``python -m bench.run``."""
