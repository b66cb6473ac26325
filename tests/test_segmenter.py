"""Mask R-CNN construction, checkpoints, the predictor, the staged schedule and Lightning training on CPU."""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from nucleaizer import simulate
from nucleaizer.data import CropDataset, collate_lists
from nucleaizer.errors import UserError
from nucleaizer.segmenter import (
    MaskRCNNPredictor,
    build_maskrcnn,
    fit_segmenter,
    load_segmenter,
    read_segmenter_file,
    save_segmenter,
    split_train_val,
)
from nucleaizer.segmenter_module import stage_at_epoch, trainable_mask
from tests.helpers.networks import arch

# a narrow CPU model: MobileNetV3-FPN with small heads, few proposals
TINY = arch(
    mask_head_layers=[16, 16],
    box_representation_size=64,
    box_batch_size_per_image=32,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=100,
    box_score_thresh=0.0,
)
AUGMENT_OFF = {
    "flip": 0,
    "rotate": 0,
    "translate": 0,
    "intensity_stretch": 0,
    "equalize": 0,
    "invert": 0,
    "blur": 0,
    "noise": 0,
    "channel_swap": 0,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pairs(n: int = 3, size: int = 96):
    return [
        simulate.sample(("fluorescence", "he", "brightfield")[i % 3], size, 40, 0.3, seed=i) for i in range(n)
    ]


@pytest.mark.parametrize(
    "backbone,anchors,n_maps",
    [
        ("resnet50", [16, 32, 64, 128, 256], 5),
        ("resnet18", [16, 32, 64, 128, 256], 5),
        ("mobilenet_v3", [16, 32, 64], 3),
    ],
)
def test_build_each_backbone_trainable_from_scratch(backbone, anchors, n_maps):
    model = build_maskrcnn(arch(backbone=backbone, anchor_sizes=anchors, max_detections=600))
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.body.modules())
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.detections_per_img == 600
    assert model.rpn.anchor_generator.num_anchors_per_location() == [3] * n_maps
    with pytest.raises(UserError, match="anchor_sizes"):
        build_maskrcnn(arch(backbone=backbone, anchor_sizes=[32, 64]))


def test_unknown_backbone_and_missing_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="backbone"):
        build_maskrcnn(arch(backbone="vgg16"))
    with pytest.raises(UserError, match="does not exist"):
        build_maskrcnn(TINY.replace(weights=tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="does not exist"):
        load_segmenter(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt"):
        load_segmenter(tmp_path / "junk.pt")


def test_images_are_not_resized_inside_the_model():
    model = build_maskrcnn(TINY).eval()
    images, _ = model.transform([torch.rand(3, 96, 130)])
    assert images.image_sizes == [(96, 130)]


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    torch.manual_seed(0)
    model = build_maskrcnn(TINY)
    path = save_segmenter(tmp_path / "m.pt", model, TINY)
    loaded, stored = load_segmenter(path)
    assert stored == TINY and read_segmenter_file(path)["version"] == 1
    tiles = [pairs(1)[0][0], simulate.sample("he", (80, 112), 40, seed=5)[0]]
    for a, b, tile in zip(
        MaskRCNNPredictor(model.eval(), mask_threshold=0.2)(tiles),
        MaskRCNNPredictor(loaded, mask_threshold=0.2)(tiles),
        tiles,
        strict=True,
    ):
        assert len(a) and a.scores.dtype == np.float32 and (a.boxes[:, 2:] <= tile.shape[:2]).all()
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
        assert all(np.array_equal(x, y) for x, y in zip(a.crops, b.crops, strict=True))
    # weights given as a file are loaded where names and shapes match
    rebuilt = build_maskrcnn(TINY.replace(weights=path))
    assert torch.equal(rebuilt.backbone.body["0"][0].weight, model.backbone.body["0"][0].weight)


def test_trainable_groups_and_stage_boundaries():
    model = build_maskrcnn(arch(backbone="resnet18", anchor_sizes=[16, 32, 64, 128, 256]))
    heads, stage5 = trainable_mask(model, "heads"), trainable_mask(model, "stage5+")
    assert not heads["backbone.body.layer4.0.conv1.weight"] and stage5["backbone.body.layer4.0.conv1.weight"]
    assert not stage5["backbone.body.layer3.0.conv1.weight"]
    assert (
        heads["backbone.fpn.inner_blocks.0.0.weight"]
        and heads["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    )
    assert all(trainable_mask(model, "all").values())
    mobile = trainable_mask(build_maskrcnn(TINY), "stage5+")
    assert 0 < sum(mobile.values()) < len(mobile)
    stages = [{"trainable": "all", "lr": 1e-3, "epochs": 2}, {"trainable": "heads", "lr": 1e-4, "epochs": 1}]
    assert [stage_at_epoch(stages, e) for e in range(5)] == [0, 0, 1, 1, 1]


def test_loss_falls_over_a_few_steps_on_procedural_data():
    torch.manual_seed(0)
    model = build_maskrcnn(TINY).train()
    dataset = CropDataset(pairs(2), crop_size=80)
    images, targets = collate_lists([dataset[(0, 0, 1)], dataset[(0, 1, 2)]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_fit_keeps_frozen_parameters_and_writes_the_best_checkpoint(tmp_path):
    torch.manual_seed(0)
    start = save_segmenter(tmp_path / "start.pt", build_maskrcnn(TINY), TINY)
    path = fit_segmenter(
        pairs(2),
        pairs(1),
        tmp_path / "run",
        arch=TINY,
        stages=[{"trainable": "heads", "lr": 1e-3, "epochs": 1}],
        steps_per_epoch=2,
        crop_size=96,
        batch_size=1,
        augment=AUGMENT_OFF,
        init_checkpoint=start,
        trainer={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    )
    before, after = read_segmenter_file(start)["state_dict"], read_segmenter_file(path)["state_dict"]
    body = [k for k in before if k.startswith("backbone.body.")]
    assert body and all(torch.equal(before[k], after[k]) for k in body)  # weights and BatchNorm statistics
    assert not torch.equal(
        before["roi_heads.mask_predictor.mask_fcn_logits.weight"],
        after["roi_heads.mask_predictor.mask_fcn_logits.weight"],
    )
    assert (tmp_path / "run" / "logs" / "metrics.csv").read_text().count("val_dsb") == 1


def test_two_process_ddp_on_cpu_completes(tmp_path):
    path = fit_segmenter(
        pairs(2),
        pairs(1),
        tmp_path / "ddp",
        arch=TINY,
        stages=[{"trainable": "all", "lr": 1e-4, "epochs": 1}],
        steps_per_epoch=1,
        crop_size=96,
        batch_size=1,
        augment=AUGMENT_OFF,
        trainer={"accelerator": "cpu", "devices": 2, "strategy": "ddp_fork", "enable_progress_bar": False},
    )
    model, _ = load_segmenter(path)
    assert model.roi_heads.detections_per_img == 500


@pytest.mark.parametrize("name", ["maskrcnn_small", "maskrcnn_mobilenet", "maskrcnn_r50"])
def test_profile_configs_build_and_split_into_kwargs(name):
    from nucleaizer.config_files import load_config
    from nucleaizer.segmenter import training_kwargs_from_config

    config = load_config("segmenter", name)
    kwargs = training_kwargs_from_config(config)
    model = build_maskrcnn(kwargs["arch"])
    assert model.roi_heads.detections_per_img >= 500
    assert len(set(model.rpn.anchor_generator.num_anchors_per_location())) == 1
    assert {"stages", "crop_size", "batch_size", "augment", "steps_per_epoch"} <= set(kwargs)


def test_architectures_compare_by_value_and_name_their_weight_shape_differences():
    from_yaml = arch(anchor_sizes=[16, 32, 64])
    from_checkpoint = arch(anchor_sizes=(16, 32, 64))
    assert from_yaml == from_checkpoint and from_yaml.as_dict()["anchor_sizes"] == [16, 32, 64]
    inference_only = from_yaml.replace(box_score_thresh=0.9, rpn_post_nms_top_n_test=50)
    assert from_yaml.weight_shape_differences(inference_only) == []
    wider = from_yaml.replace(mask_head_layers=[32, 32], box_representation_size=128)
    assert from_yaml.weight_shape_differences(wider) == [
        "mask_head_layers: [128, 128, 128, 128] != [32, 32]",
        "box_representation_size: 512 != 128",
    ]


def test_fine_tuning_refuses_a_start_of_another_network(tmp_path):
    start = save_segmenter(tmp_path / "start.pt", build_maskrcnn(TINY), TINY)
    with pytest.raises(UserError, match="another architecture.*box_representation_size: 64 != 32"):
        fit_segmenter(
            pairs(1),
            [],
            tmp_path / "run",
            arch=TINY.replace(box_representation_size=32),
            stages=[{"trainable": "all", "lr": 1e-4, "epochs": 1}],
            init_checkpoint=start,
        )


def test_anchor_sizes_per_map_may_be_lists_of_equal_length():
    model = build_maskrcnn(TINY.replace(anchor_sizes=[[16, 24], [32, 48], [64, 96]]))
    assert model.rpn.anchor_generator.num_anchors_per_location() == [6, 6, 6]
    with pytest.raises(UserError, match="same number"):
        build_maskrcnn(TINY.replace(anchor_sizes=[[16, 24], [32], [64]]))


def test_train_val_split_is_fixed_by_name_and_capped():
    from types import SimpleNamespace

    samples = [SimpleNamespace(name=f"image_{i:03d}") for i in range(200)]
    train, val = split_train_val(samples, val_fraction=0.2)
    assert 25 < len(val) < 55 and len(train) + len(val) == 200
    assert not {s.name for s in train} & {s.name for s in val}
    # order of the input does not change who validates
    _, val_reversed = split_train_val(samples[::-1], val_fraction=0.2)
    assert {s.name for s in val_reversed} == {s.name for s in val}
    # the cap keeps a subset of the same validation images; the rest train
    capped_train, capped_val = split_train_val(samples, val_fraction=0.2, max_val_images=10)
    assert len(capped_val) == 10 and {s.name for s in capped_val} < {s.name for s in val}
    assert len(capped_train) == 190
    # a single sample cannot be split: it trains (and validates)
    assert split_train_val(samples[:1], val_fraction=1.0) == (samples[:1], samples[:1])


def test_precision_auto_is_bf16_only_where_it_runs_natively(monkeypatch):
    from nucleaizer import segmenter

    assert (
        segmenter.resolve_precision("32-true") == "32-true"
        and segmenter.resolve_precision("16-mixed") == "16-mixed"
    )
    monkeypatch.setattr(segmenter, "native_bf16", lambda accelerator: True)
    assert segmenter.resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(segmenter, "native_bf16", lambda accelerator: False)
    assert segmenter.resolve_precision("auto", "cpu") == "32-true"


def test_fit_exports_the_weight_average_and_resumes_where_it_stopped(tmp_path):
    import pandas as pd

    torch.manual_seed(0)
    settings = {
        "arch": TINY,
        "steps_per_epoch": 3,
        "crop_size": 96,
        "batch_size": 1,
        "augment": AUGMENT_OFF,
        "ema_decay": 0.9,
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    first = fit_segmenter(
        pairs(2), [], tmp_path / "run", stages=[{"trainable": "all", "lr": 1e-3, "epochs": 1}], **settings
    )
    last = torch.load(tmp_path / "run" / "lightning" / "last.ckpt", map_location="cpu", weights_only=False)
    average = {
        k.removeprefix("ema_model."): v for k, v in last["state_dict"].items() if k.startswith("ema_model.")
    }
    trained = {k.removeprefix("model."): v for k, v in last["state_dict"].items() if k.startswith("model.")}
    exported = read_segmenter_file(first)["state_dict"]
    name = "roi_heads.mask_predictor.mask_fcn_logits.weight"
    assert torch.equal(exported[name], average[name]) and not torch.equal(exported[name], trained[name])
    # a longer schedule continues from the saved step, not from the start
    fit_segmenter(
        pairs(2),
        [],
        tmp_path / "run",
        stages=[{"trainable": "all", "lr": 1e-3, "epochs": 2}],
        resume=True,
        **settings,
    )
    steps = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")["step"].dropna()
    assert steps.max() == 5 and (steps.diff().dropna() >= 0).all()
    assert steps.min() < 3  # the first run's rows are kept
    # resuming a run that already reached its end trains nothing and keeps the history
    fit_segmenter(
        pairs(2),
        [],
        tmp_path / "run",
        stages=[{"trainable": "all", "lr": 1e-3, "epochs": 2}],
        resume=True,
        **settings,
    )
    assert pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")["step"].dropna().max() == 5
