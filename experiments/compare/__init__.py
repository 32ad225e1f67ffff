"""The compare study: its command (`python -m experiments.compare`), children and report."""
