"""The reproduction check: its command (`python -m experiments.reproduce`) and report."""
