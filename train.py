"""Adapt nucleaizer to an experiment:  python train.py +target=NAME [key=value ...]  (= nucleaizer-train)"""

from nucleaizer import cli

if __name__ == "__main__":  # guard: Lightning DDP re-executes this script in every process
    cli.train()
