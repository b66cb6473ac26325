"""Accuracy and speed benchmarks, one module each, run from the repository root as ``python -m benchmarks.NAME``;
common.py holds the machine record and the report writer they share, results go to benchmarks/results/."""
