"""Segment a folder of images:  python infer.py model=runs/NAME/model input=DIR output=DIR"""

from nucleaizer import inference
from nucleaizer.cli import hydra_entry_point

if __name__ == "__main__":  # guard: worker processes may re-import this script
    hydra_entry_point("infer", inference.run, validate=inference.validate_config)
