"""The seed post's experiment on the torch backend: an alias of ``python -m experiments.run --backend torch``."""

from experiments.run import main

if __name__ == "__main__":
    main(backend="torch")
