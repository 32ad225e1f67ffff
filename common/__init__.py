"""Framework-neutral parts of xent-parity: spec, variants, data, weights, reference, results, reports.

Nothing in this package imports a deep-learning framework; every backend builds on it.
"""
