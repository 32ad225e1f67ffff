"""One-off tools: the vendored test subset, and the JAX eager-vs-jit ablation."""
