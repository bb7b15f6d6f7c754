"""`python -m reconciler.cli`: the `galleon` program."""
from . import run

if __name__ == "__main__":
    run()
