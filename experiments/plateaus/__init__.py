"""The plateaus study: what moves a stuck model (`python -m experiments.plateaus`), and its report."""
