"""Every file format in and out: images to 8-bit RGB, label images, dataset folders, atomic writes.

Images of any common format (PNG, TIFF, JPEG, BMP; grey, RGB or RGBA; 8/16/32-bit or float) become
`np.uint8 (H, W, 3)` RGB. Data deeper than 8 bits is stretched between two percentiles, never cast, so a
12-bit camera image does not come out black. Label images are integer `(H, W)` arrays, 0 = background.
Every problem with a file raises `UserError` naming the file; folder readers skip bad files with a warning
and count them at the end, or fail on the first one (`on_bad_file="fail"`).

The parts: ``arrays`` (conversion to RGB and label arrays, the suffixes), ``read``, ``write`` (atomic) and
``samples`` (dataset folders); the names below are the package's interface, used as ``io.read_image``.
"""

from nucleaizer.io.arrays import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    MAX_CHANNELS,
    MAX_UINT16_LABEL,
    OME_SUFFIX,
    ON_BAD_FILE_CHOICES,
    STRETCH_PERCENTILES,
    TIFF_SUFFIXES,
    to_rgb8,
)
from nucleaizer.io.read import labels_from_masks, pixel_size_um, read_image, read_labels
from nucleaizer.io.samples import Sample, file_stem, files_by_stem, iter_samples, list_samples
from nucleaizer.io.write import atomic_write, write_csv, write_image, write_labels, write_table

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_SUFFIXES",
    "MAX_CHANNELS",
    "MAX_UINT16_LABEL",
    "OME_SUFFIX",
    "ON_BAD_FILE_CHOICES",
    "STRETCH_PERCENTILES",
    "TIFF_SUFFIXES",
    "Sample",
    "atomic_write",
    "file_stem",
    "files_by_stem",
    "iter_samples",
    "labels_from_masks",
    "list_samples",
    "pixel_size_um",
    "read_image",
    "read_labels",
    "to_rgb8",
    "write_csv",
    "write_image",
    "write_labels",
    "write_table",
]
