"""The seed post's experiment on the keras backend: an alias of ``python -m experiments.run --backend keras``."""

from experiments.run import main

if __name__ == "__main__":
    main(backend="keras")
