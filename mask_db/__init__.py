"""mask_db: a database of real nucleus shapes, simulated shapes and synthetic mask layouts.

Works on numpy label images only; knows nothing of nucleaizer or stylegen. The public API:

- ``MaskDatabase(path, create=False)``: the SQLite nucleus database (``add_labels``, ``add_many``,
  ``query``, ``crops``, ``info``).
- ``style_statistics(label_images, min_area=16) -> StyleStats``: what a style's nuclei look like.
- ``LayoutComposer(stats, database, ...).compose(n, size, seed) -> list[label image]``, or
  ``compose_masks(stats, database, n, size, seed, **options)``.
- ``compare(generated_stats, real_stats) -> dict``: match figures.
- ``montage(real, generated) -> RGB uint8``: real masks above generated ones.
"""

from mask_db.layout import LayoutComposer, compose_masks
from mask_db.montage import montage
from mask_db.stats import StyleStats, compare, style_statistics
from mask_db.store import MaskDatabase

__all__ = [
    "LayoutComposer",
    "MaskDatabase",
    "StyleStats",
    "compare",
    "compose_masks",
    "montage",
    "style_statistics",
]
