"""Segmentation of images with a trained model: the folder job infer.py runs (``job``), the segmenter that
rescales, tiles, votes over test-time views and paints (``nucleus_segmenter``, ``tiling``, ``tta``), and the
outputs beside the label images (``overlay``, ``exports``). ``nucleaizer.instances`` holds the objects all of
them pass around."""
