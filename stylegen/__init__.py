"""stylegen: pix2pix style transfer from binary nucleus masks to images of one style.

Works on numpy arrays and torch tensors only; knows nothing of nucleaizer or mask_db.
"""
