"""Shipyard's benchmark suite: the same builds run by Shipyard, docker BuildKit and buildah.

`python -m benchmarks` runs the cases in `benchmarks.cases` (B1–B6), times each tool
invocation as a whole subprocess, checks that every run really was cold / cached / a
miss as the case requires, and reports medians, ratios to BuildKit and PASS/MISS
against the targets (`benchmarks.report`). See benchmarks/README.md.

Only the standard library (and rich, when present, for the table) is imported: the
suite drives every builder through its command line, never through Shipyard's modules,
so all tools pay the same start-up and are measured the same way.
"""
