"""Segment a folder of images:  python infer.py input=DIR output=DIR [model=NAME|PATH|classical]  (= nucleaizer-infer)"""

from nucleaizer import cli

if __name__ == "__main__":  # guard: worker processes may re-import this script
    cli.infer()
