"""Runnable modules: one per backend, the cross-framework comparison, the report and the benchmarks."""
