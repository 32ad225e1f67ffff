"""The bench study: its command (`python -m experiments.bench`), children and report."""
