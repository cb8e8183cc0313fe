"""Shared utilities every package may use: errors, atomic files, JSON/CSV, devices, 8-bit pixels,
weights files with strict checks, the resume rule, per-item claims and the C heap's policy.

Nothing here imports the inversion engine, a segmenter or a report, and this ``__init__`` imports
nothing at all, so ``import mganprior.core.errors`` costs microseconds.
"""
