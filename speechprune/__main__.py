"""`python -m speechprune ...` (also what torchrun runs: `torchrun ... -m speechprune prune ...`)."""

from .cli.app import run

run()
