"""Segment a folder of images:  python infer.py input=DIR output=DIR [model=NAME|PATH|classical]"""

from nucleaizer import inference
from nucleaizer.cli import hydra_entry_point

if __name__ == "__main__":  # guard: worker processes may re-import this script
    hydra_entry_point("infer", inference.run, validate=inference.validate_config)
