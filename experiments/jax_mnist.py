"""The seed post's experiment on the jax backend: an alias of ``python -m experiments.run --backend jax``."""

from experiments.run import main

if __name__ == "__main__":
    main(backend="jax")
