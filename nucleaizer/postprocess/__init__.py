"""Post-processing (docs/method.md section 7): U-Net ensemble probability map, object rules with soft-margin
contour correction (p1..p6), and a genetic algorithm that tunes p1..p6 on a validation set.

Modules: ``rules`` (postprocess_labels, PostprocessParams), ``unet`` (train_ensemble, load_ensemble,
UNetEnsemble.predict_probability), ``genetic`` (Gene, GeneticAlgorithm), ``tune`` (tune_parameters on
cached cases). Only the rules are imported here, so importing the package does not load torch.
"""

from nucleaizer.postprocess.rules import IDENTITY_PARAMS, PostprocessParams, postprocess_labels

__all__ = ["IDENTITY_PARAMS", "PostprocessParams", "postprocess_labels"]
