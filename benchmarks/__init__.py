"""Benchmarks of ftlcloud against its peers and the hardware limits (issue 8).

Run ``python -m benchmarks [--size small|paper] [--out results.json]``; see README.md.
"""
