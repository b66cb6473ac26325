"""nucleaizer: nucleus segmentation that adapts to new, unlabelled experiments through style transfer."""

__version__ = "0.1.0"
