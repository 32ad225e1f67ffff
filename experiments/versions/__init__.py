"""The versions study: its command (`python -m experiments.versions`), children and report."""
