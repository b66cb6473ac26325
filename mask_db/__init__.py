"""mask_db: a database of real nucleus shapes, simulated shapes and synthetic mask layouts.

Works on numpy label images only; knows nothing of nucleaizer or stylegen.
"""
