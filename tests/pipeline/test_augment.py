"""Robustness augmentations: checked against scipy/torch oracles, off means untouched, params."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.nn import functional as F

from pipeline.config import ParamError, parse_group
from pipeline.training.augment import (
    add_noise,
    blur_some,
    elastic_distort,
    neighbour_extremes,
    smooth,
    vary_strokes,
)
from pipeline.training.loop import augment_batch, robustness_augment
from pipeline.training.params import TrainParams
from tests.conftest import flat_digits

ROBUST = {
    "augment_elastic": 8.0,
    "augment_stroke": 1.0,
    "augment_blur": 1.0,
    "augment_noise": 1.0,
}


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """Sixteen fixture digits as training sees them: float (16, 784) pixels 0–255."""
    return torch.from_numpy(flat_digits(16, seed=4)[0]).float()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_smooth_matches_scipy_gaussian_filter_per_image_sigma(batch):
    images = batch[:3].view(3, 1, 28, 28)
    sigma = torch.tensor([0.7, 1.5, 4.0])
    out = smooth(images, sigma)
    for k in range(3):
        # mode="constant": zero outside the image; a long truncation to match the full kernel.
        ref = ndimage.gaussian_filter(images[k, 0].numpy(), float(sigma[k]), mode="constant",
                                      truncate=30)  # fmt: skip
        assert np.allclose(out[k, 0].numpy(), ref, atol=1e-3)


def test_smooth_with_sigma_zero_is_the_identity(batch):
    images = batch[:2].view(2, 1, 28, 28)
    assert torch.allclose(smooth(images, torch.zeros(2)), images, atol=1e-4)


def test_neighbour_extremes_are_max_pooling_and_its_mirror(batch):
    images = batch.view(-1, 1, 28, 28)
    high, low = neighbour_extremes(images)
    assert torch.equal(high, F.max_pool2d(images, 3, stride=1, padding=1))
    # Zero outside the image: border pixels erode against the background, inner ones as pooling.
    padded = F.pad(images, (1, 1, 1, 1))
    assert torch.equal(low, -F.max_pool2d(-padded, 3, stride=1))


def test_elastic_distortion_moves_pixels_locally_and_alpha_zero_moves_nothing(batch):
    assert torch.allclose(elastic_distort(batch, 0.0, 4.0, gen()), batch, atol=1e-3)
    out = elastic_distort(batch, 8.0, 4.0, gen())
    assert not torch.allclose(out, batch, atol=1.0)
    # A smooth field of a few pixels keeps most of the ink (Simard's distortions keep the digit).
    assert torch.allclose(out.sum(1), batch.sum(1), rtol=0.25)


def test_stroke_variation_thickens_or_thins_every_image_when_all_are_chosen(batch):
    out = vary_strokes(batch, 1.0, gen())
    more = out.sum(1) > batch.sum(1)
    less = out.sum(1) < batch.sum(1)
    assert (more | less).all() and more.any() and less.any()
    assert torch.equal(vary_strokes(batch, 0.0, gen()), batch)


def test_blur_and_noise_touch_only_the_chosen_share(batch):
    assert torch.equal(blur_some(batch, 0.0, 1.0, gen()), batch)
    assert torch.equal(add_noise(batch, 0.0, 40.0, gen()), batch)
    blurred = blur_some(batch, 1.0, 1.0, gen())
    # A blur never sharpens; sigma is drawn from [0, 1), so a few images are barely touched.
    assert (blurred.std(1) <= batch.std(1) + 1e-3).all()
    assert (blurred.std(1) < 0.9 * batch.std(1)).float().mean() > 0.5
    noisy = add_noise(batch, 1.0, 40.0, gen())
    assert noisy.min() >= 0 and noisy.max() <= 255
    assert not torch.equal(noisy, batch)


def test_with_the_robustness_params_off_the_batch_and_the_generator_are_untouched(batch):
    off = TrainParams(augment=True)
    g = gen()
    state = g.get_state()
    assert robustness_augment(batch, off, g) is batch
    assert torch.equal(g.get_state(), state)  # so runs recorded before these params repeat


def test_augment_batch_applies_the_robustness_params_that_are_on(batch):
    labels = torch.from_numpy(flat_digits(16, seed=4)[1])
    plain = TrainParams(augment=True)
    robust = dataclasses.replace(plain, **ROBUST)
    a, b = augment_batch(batch, labels, plain, gen(1)), augment_batch(batch, labels, robust, gen(1))
    assert a.shape == b.shape == batch.shape
    assert not torch.allclose(a, b, atol=1.0)
    assert torch.equal(augment_batch(batch, labels, robust, gen(1)), b)  # seeded: repeatable


@pytest.mark.parametrize(
    ("key", "value"),
    [("augment_stroke", 1.5), ("augment_blur", -0.1), ("augment_noise", 2), ("augment_elastic", -1),
     ("augment_elastic_sigma", 0), ("augment_blur_sigma", 0), ("augment_noise_std", -5)],
)  # fmt: skip
def test_bad_robustness_params_name_their_key(key, value):
    with pytest.raises(ParamError, match=f"train.{key}"):
        parse_group(TrainParams, "train", {key: value})
