"""U-Net ensemble: specs from the config, targets, training on procedural images, save/load."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nucleaizer import simulate
from nucleaizer.errors import UserError
from nucleaizer.postprocess.refiner import load_refiner
from nucleaizer.postprocess.rules import postprocess_labels
from nucleaizer.postprocess.unet import (
    CropDataset,
    MemberSpec,
    UNet,
    foreground_target,
    image_tensor,
    load_ensemble,
    member_specs,
    train_ensemble,
)

TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "precision": "32-true",
    "num_workers": 0,
    "enable_progress_bar": False,
}


def test_member_specs_broadcast_scalars_and_check_lengths():
    assert member_specs(2, [0, 1.5], 3, [8, 16]) == [MemberSpec(3, 8, 0.0), MemberSpec(3, 16, 1.5)]
    with pytest.raises(UserError, match="target_blur_sigmas"):
        member_specs(3, [0, 1], 3, 8)


def test_foreground_target_separates_touching_objects_and_blurs():
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 2:10] = 1
    labels[5:15, 10:18] = 2
    sharp = foreground_target(labels, 0)
    assert sharp[10, 5] == 1 and sharp[10, 9] == 0 and sharp[10, 10] == 0 and sharp[0, 0] == 0
    soft = foreground_target(labels, 1.5)
    assert soft.dtype == np.float32 and 0 < soft[4, 5] < 1 and soft.max() <= 1


@pytest.mark.parametrize("shape", [(37, 50), (64, 64)])
def test_unet_keeps_any_image_size(shape):
    net = UNet(depth=3, base_filters=4).eval()
    assert net(torch.rand(2, 3, *shape)).shape == (2, 1, *shape)


def test_crops_repeat_for_a_seed_and_small_images_are_padded():
    pairs = [simulate.sample("he", size=128, diameter_px=12, seed=0)]
    first, second = CropDataset(pairs, 64, 2, 1.0, seed=5), CropDataset(pairs, 64, 2, 1.0, seed=5)
    assert torch.equal(first[1][0], second[1][0])
    second.epoch = 1
    assert not torch.equal(first[1][0], second[1][0])
    small = CropDataset([simulate.sample("he", size=48, diameter_px=12, seed=0)], 64, 1, 1.0)
    image, target = small[0]
    assert image.shape == (3, 64, 64) and target.shape == (1, 64, 64)


def test_tiny_ensemble_loss_falls_and_round_trips(tmp_path, one_torch_thread):
    pairs = [simulate.sample("fluorescence", size=64, diameter_px=16, seed=s) for s in range(4)]
    specs = member_specs(2, [0.0, 1.0], 2, 8)
    images = torch.stack([image_tensor(image) for image, _ in pairs])

    def loss_of(net, sigma):
        targets = torch.stack([torch.from_numpy(foreground_target(lab, sigma))[None] for _, lab in pairs])
        with torch.no_grad():
            return float(F.binary_cross_entropy_with_logits(net.eval()(images), targets))

    torch.manual_seed(0)
    untrained = [UNet(s.depth, s.base_filters) for s in specs]
    ensemble, losses = train_ensemble(
        pairs,
        specs,
        epochs=6,
        lr=3e-3,
        batch_size=4,
        crop_size=64,
        crops_per_image=2,
        trainer=TRAINER,
        seed=0,
    )
    assert len(losses) == 2 and all(len(member) == 6 for member in losses)
    for net, fresh, spec in zip(ensemble.nets, untrained, specs, strict=True):
        assert loss_of(net, spec.blur_sigma) < 0.8 * loss_of(fresh, spec.blur_sigma)
    prob = ensemble.predict_probability(pairs[0][0])
    assert prob.shape == (64, 64) and prob.dtype == np.float32
    foreground = pairs[0][1] > 0
    assert prob[foreground].mean() > prob[~foreground].mean() + 0.1
    loaded = load_ensemble(ensemble.save(tmp_path / "unet.pt"))
    assert loaded.specs == specs
    np.testing.assert_array_equal(
        loaded.predict_probability([pairs[1][0]])[0], ensemble.predict_probability(pairs[1][0])
    )
    # a large image in overlapping tiles agrees with the whole-image map (per-tile standardisation differs)
    big = np.concatenate([pairs[0][0], pairs[1][0]], axis=1)
    whole = ensemble.predict_probability(big)
    ensemble.tile_size, ensemble.tile_overlap = 48, 8
    tiled = ensemble.predict_probability(big)
    assert tiled.shape == (64, 128) and np.corrcoef(whole.ravel(), tiled.ravel())[0, 1] > 0.9
    ensemble.tile_size, ensemble.tile_overlap = 512, 64
    # the refiner inference calls: the same as the rules on the ensemble's map
    params = {"p3_threshold": 0.5, "p2_min_area_px": 10}
    refiner = load_refiner(tmp_path / "unet.pt", params)
    image, labels = pairs[1]
    np.testing.assert_array_equal(
        refiner(labels, image), postprocess_labels(labels, ensemble.predict_probability(image), params)
    )


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="missing.pt"):
        load_ensemble(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="bad.pt"):
        load_ensemble(bad)


def test_fit_postprocess_writes_a_bundle_section_that_loads(tmp_path, one_torch_thread):
    from nucleaizer.config_files import load_config
    from nucleaizer.postprocess.genetic import GASearch
    from nucleaizer.postprocess.stage import fit_postprocess

    cfg = load_config("postprocess", "default")
    unet = cfg["unet"] | {
        "members": 1,
        "target_blur_sigmas": [1.0],
        "depth": 2,
        "base_filters": 4,
        "epochs": 1,
        "crop_size": 64,
    }
    ga = GASearch.from_config(cfg["ga"] | {"population": 6, "generations": 2, "workers": 1})
    pairs = [simulate.sample("fluorescence", size=64, diameter_px=16, seed=s) for s in range(3)]
    val = [
        (f"v{s}", *simulate.sample("fluorescence", size=64, diameter_px=16, seed=10 + s)) for s in range(4)
    ]
    section = fit_postprocess(
        pairs,
        val,
        lambda image: (image[..., 0] > 60).astype(np.int32),
        tmp_path,
        unet,
        ga,
        cfg["params"],
        trainer=TRAINER,
        progress=False,
    )
    assert section["ensemble"] == "unet.pt" and set(section["params"]) == set(cfg["params"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tuning_images"] == 2 and report["held_out_images"] == 2
    assert report["dsb_tuning"]["ga_tuned"] >= report["dsb_tuning"]["raw"]
    refiner = load_refiner(tmp_path / section["ensemble"], section["params"])
    assert refiner(val[0][2], val[0][1]).shape == (64, 64)
