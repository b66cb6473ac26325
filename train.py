"""Adapt nucleaizer to an experiment:  python train.py +target=NAME [key=value ...]"""

from nucleaizer import pipeline
from nucleaizer.cli import hydra_entry_point

if __name__ == "__main__":  # guard: Lightning DDP re-executes this script in every process
    hydra_entry_point("train", pipeline.run, validate=pipeline.validate_config)
