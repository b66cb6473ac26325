"""stylegen.networks, stylegen.data and stylegen.budget: shapes, tiles and the training budget rule."""

import numpy as np
import pytest
import torch
from torch import nn

from stylegen.budget import plan_budget
from stylegen.data import (
    TileDataset,
    cut_tiles,
    images_to_tensor,
    masks_to_tensor,
    tensor_to_images,
    tile_origins,
)
from stylegen.model import gan_loss, l1_loss
from stylegen.networks import PatchDiscriminator, UnetGenerator


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_unet_256_and_patchgan_match_pix2pix_sizes():
    generator, discriminator = UnetGenerator(depth=8, base_filters=64), PatchDiscriminator(base_filters=64)
    # parameter counts of pytorch-CycleGAN-and-pix2pix's unet_256 and basic (n_layers=3) discriminator
    assert abs(n_params(generator) - 54_414_000) < 0.01 * 54_414_000
    assert abs(n_params(discriminator) - 2_765_000) < 0.01 * 2_765_000
    dropouts = [m for m in generator.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3
    # the 1x1 bottleneck is not normalised
    assert not any(isinstance(m, nn.InstanceNorm2d | nn.BatchNorm2d) for m in generator.encoder[-1].modules())


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_shapes_and_range(norm):
    generator = UnetGenerator(depth=4, base_filters=8, dropout=0.5, norm=norm)
    discriminator = PatchDiscriminator(base_filters=8, n_layers=3, norm=norm)
    x = torch.rand(2, 1, 64, 96) * 2 - 1
    y = generator(x)
    assert y.shape == (2, 3, 64, 96)
    assert y.abs().max() <= 1
    # 70x70 PatchGAN: three stride-2 layers, then two stride-1 4x4 layers
    assert discriminator(torch.cat([x, y], 1)).shape == (2, 1, 64 // 8 - 2, 96 // 8 - 2)


def test_resize_upsampling_has_no_transposed_convolution_and_keeps_shapes():
    generator = UnetGenerator(depth=4, base_filters=8, upsample="resize")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in generator.modules())
    assert any(isinstance(m, nn.Upsample) for m in generator.modules())
    out = generator(torch.rand(2, 1, 32, 48) * 2 - 1)
    assert out.shape == (2, 3, 32, 48) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="net_g.upsample"):
        UnetGenerator(depth=4, upsample="pixelshuffle")


def test_noise_channels_make_renders_of_one_mask_differ_unless_the_noise_is_the_same():
    torch.manual_seed(0)
    generator = UnetGenerator(depth=4, base_filters=8, dropout=0.0, noise_channels=1).eval()
    assert generator.encoder[0].in_channels == 2
    mask = -torch.ones(1, 1, 32, 32)  # an empty mask: without noise, every render would be the same
    noise = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        same = [generator(mask, noise) for _ in range(2)]
        drawn = [generator(mask) for _ in range(2)]
    assert torch.equal(same[0], same[1])
    assert not torch.equal(drawn[0], drawn[1])
    assert (same[0] - drawn[0]).abs().mean() > 1e-4


def test_bad_norm_names_the_key():
    with pytest.raises(ValueError, match="net_g.norm"):
        UnetGenerator(depth=3, base_filters=4, norm="group")


def test_tile_origins_cover_the_edge():
    assert tile_origins(300, 64) == [0, 64, 128, 192, 236]
    assert tile_origins(256, 256) == [0]
    assert tile_origins(40, 64) == [0]


def test_cut_tiles_pads_small_images_and_skips_empty_tiles():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 150, 3), dtype=np.uint8)
    mask = np.zeros((40, 150), bool)
    mask[10:20, 5:15] = True  # only the first of the three tiles along x has a nucleus
    tiles, masks, ignored = cut_tiles([image], [mask], 64)
    assert tiles.shape == (1, 64, 64, 3) and masks.shape == (1, 64, 64) and ignored is None
    np.testing.assert_array_equal(tiles[0, :40], image[:, :64])
    # reflect padding: row 40 mirrors row 38
    np.testing.assert_array_equal(tiles[0, 40], image[38, :64])
    # the mask is padded the same way, so the nucleus is mirrored with the image
    np.testing.assert_array_equal(masks[0, :40], mask[:, :64])
    assert masks[0, 40:].sum() == 5 * 10
    all_tiles, _, _ = cut_tiles([image], [mask], 64, skip_empty=False)
    assert len(all_tiles) == 3


def test_ignore_masks_are_cut_with_their_masks_and_do_not_decide_which_tiles_are_kept():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 150, 3), dtype=np.uint8)
    mask = np.zeros((40, 150), bool)
    mask[10:20, 5:15] = True
    ignore = np.zeros((40, 150), bool)
    ignore[30:40, 20:30] = True  # beside the nucleus, in the same tile
    ignore[0:10, 100:110] = True  # alone in a tile without a nucleus: that tile stays out
    tiles, masks, ignored = cut_tiles([image], [mask], 64, ignore=[ignore])
    assert ignored.shape == masks.shape == (1, 64, 64)
    np.testing.assert_array_equal(ignored[0, :40], ignore[:, :64])
    assert ignored[0, 40:].sum() == 9 * 10  # reflect-padded like the mask: rows 40..48 mirror 38..30
    with pytest.raises(ValueError, match="mask 0"):
        cut_tiles([image], [mask], 64, ignore=[ignore[:20]])


def test_tile_dataset_flips_the_keep_map_with_its_pair():
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 0, 0] = True
    ignore = mask.copy()  # the same pixel, so flips must keep them together
    image = np.zeros((1, 8, 8, 3), np.uint8)
    dataset = TileDataset(image, mask, flip=True, ignore_tiles=ignore)
    for seed in range(8):
        torch.manual_seed(seed)
        mask_t, _, keep = dataset[0]
        assert keep.shape == (1, 8, 8)
        torch.testing.assert_close(keep, (mask_t < 0).float())
    assert len(TileDataset(image, mask, flip=False)[0]) == 2


def test_ignored_pixels_and_patches_do_not_count_in_the_losses():
    torch.manual_seed(0)
    fake, real = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    logits = torch.randn(2, 1, 6, 6)
    everything = torch.ones(2, 1, 64, 64)
    # keeping every pixel is the plain loss
    torch.testing.assert_close(l1_loss(fake, real, everything), l1_loss(fake, real))
    torch.testing.assert_close(gan_loss(logits, True, everything), gan_loss(logits, True))
    keep = everything.clone()
    keep[:, :, :20, :20] = 0
    changed_fake, changed_logits = fake.clone(), logits.clone()
    changed_fake[:, :, :20, :20] = 5.0  # only ignored pixels change
    changed_logits[:, :, 0, 0] = -50.0  # the map's first cell covers ignored pixels
    torch.testing.assert_close(l1_loss(changed_fake, real, keep), l1_loss(fake, real, keep))
    torch.testing.assert_close(gan_loss(changed_logits, True, keep), gan_loss(logits, True, keep))
    # ... while the same changes count without the ignore mask
    assert l1_loss(changed_fake, real) > l1_loss(fake, real) + 0.1
    assert gan_loss(changed_logits, True) > gan_loss(logits, True) + 0.5


def test_cut_tiles_rejects_mismatched_pairs():
    with pytest.raises(ValueError, match="mask 0"):
        cut_tiles([np.zeros((64, 64, 3), np.uint8)], [np.zeros((32, 64), bool)], 64)
    with pytest.raises(ValueError, match="image 0"):
        cut_tiles([np.zeros((64, 64), np.uint8)], [np.zeros((64, 64), bool)], 64)


def test_tensor_conversions_round_trip():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(tensor_to_images(images_to_tensor(images)), images)
    masks = masks_to_tensor(np.array([[[True, False]]]))
    assert masks.tolist() == [[[[1.0, -1.0]]]]


def test_budget_rule_gpu_profile_keeps_the_paper_rule():
    plan = plan_budget(n_tiles=200, batch_size=1, epochs_budget=5000, decay_epochs=100, max_steps=None)
    assert (plan.constant_steps, plan.decay_steps) == (25 * 200, 100 * 200)
    # more tiles, fewer constant epochs
    assert plan_budget(1000, 1, 5000, 100).constant_steps == 5 * 1000
    assert plan_budget(6000, 1, 5000, 100).constant_steps == 0
    assert plan_budget(200, 4, 5000, 100).steps_per_epoch == 50


def test_budget_cap_scales_both_phases_and_decays_to_zero():
    plan = plan_budget(n_tiles=200, batch_size=1, epochs_budget=5000, decay_epochs=100, max_steps=400)
    assert plan.total_steps == 400
    assert plan.constant_steps == 80  # 5000 / 25000 of the cap
    factors = [plan.lr_factor(step) for step in range(plan.total_steps)]
    assert factors[0] == factors[79] == 1.0
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))
    assert factors[-1] < 0.01
    with pytest.raises(ValueError, match="max_steps"):
        plan_budget(10, 1, 5000, 100, max_steps=0)
