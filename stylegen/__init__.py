"""stylegen: pix2pix style transfer from binary nucleus masks to images of one style.

Works on numpy arrays and torch tensors only; knows nothing of nucleaizer or mask_db.
"""

from stylegen.budget import BudgetPlan, plan_budget
from stylegen.data import cut_tiles
from stylegen.model import Pix2Pix, train_style
from stylegen.networks import PatchDiscriminator, UnetGenerator
from stylegen.realism import channel_wasserstein, classifier_two_sample_test, realism_report
from stylegen.render import render_masks, sample_grid
from stylegen.storage import load_style, save_style

__all__ = [
    "BudgetPlan",
    "PatchDiscriminator",
    "Pix2Pix",
    "UnetGenerator",
    "channel_wasserstein",
    "classifier_two_sample_test",
    "cut_tiles",
    "load_style",
    "plan_budget",
    "realism_report",
    "render_masks",
    "sample_grid",
    "save_style",
    "train_style",
]
