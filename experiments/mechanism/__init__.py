"""The mechanism study: its command (`python -m experiments.mechanism`), children and report."""
