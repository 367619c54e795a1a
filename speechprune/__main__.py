"""`python -m speechprune ...` (also what torchrun runs: `torchrun ... -m speechprune prune ...`)."""

from .cli.app import run

if __name__ == "__main__":  # not when a worker process imports the main module (bench's workers)
    run()
