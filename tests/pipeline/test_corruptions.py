"""The benchmark's corruptions: seeded, image-changing, uint8 28×28, and each the named effect."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.robustness_sets.corruptions import CORRUPTIONS, corrupt, warp
from tests.conftest import make_digits

KINDS = list(CORRUPTIONS)
# Deterministic by design: the same image always gets the same result, whatever the seed.
FIXED = {"thin", "thick", "inversion"}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Eight fixture digits, uint8 (8, 28, 28), with a blank border like MNIST's."""
    x, _ = make_digits(8, seed=3)
    framed = np.zeros_like(x)
    framed[:, 4:24, 4:24] = x[:, 4:24, 4:24]
    return framed


def test_there_are_at_least_twelve_kinds_covering_the_issue_list():
    assert len(KINDS) >= 12
    wanted = {"shot_noise", "impulse_noise", "blur", "motion_blur", "shear", "scale", "rotation",
              "translation", "contrast", "stripe", "fog", "thin", "thick", "low_resolution",
              "jpeg", "inversion"}  # fmt: skip
    assert wanted <= set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_keeps_shape_dtype_and_range_and_changes_every_image(images, kind):
    out = corrupt(images, kind, seed=0)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert 0 <= out.min() and out.max() <= 255
    changed = (out != images).reshape(len(images), -1).any(axis=1)
    assert changed.all(), f"{kind} left {np.flatnonzero(~changed)} unchanged"


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_deterministic_for_a_seed(images, kind):
    assert np.array_equal(corrupt(images, kind, seed=5), corrupt(images, kind, seed=5))
    other = corrupt(images, kind, seed=6)
    assert np.array_equal(corrupt(images, kind, seed=5), other) == (kind in FIXED)


def test_a_kind_does_not_depend_on_which_other_kinds_exist(images):
    # Each kind seeds its own stream from its name: its images are the same run alone or in a set.
    alone = corrupt(images[:3], "rotation", seed=1)
    assert np.array_equal(alone, corrupt(images, "rotation", seed=1)[:3])


def test_no_images_in_no_images_out():
    empty = np.zeros((0, 28, 28), np.uint8)
    assert corrupt(empty, "fog", seed=0).shape == (0, 28, 28)


def ink(image: np.ndarray) -> float:
    return float(image.astype(np.float64).sum())


def test_thin_and_thick_remove_and_add_ink(images):
    thin, thick = corrupt(images, "thin", 0), corrupt(images, "thick", 0)
    for before, less, more in zip(images, thin, thick, strict=True):
        assert ink(less) < ink(before) < ink(more)
        assert (less <= before).all() and (more >= before).all()  # erosion / dilation


def test_inversion_is_the_photographic_negative(images):
    assert np.array_equal(corrupt(images, "inversion", 0), 255 - images)


def test_shot_noise_keeps_the_black_background_and_impulse_noise_does_not(images):
    background = images == 0
    assert (corrupt(images, "shot_noise", 0)[background] == 0).all()
    assert (corrupt(images, "impulse_noise", 0)[background] == 255).any()


def test_contrast_and_fog_lift_the_background(images):
    for kind in ("contrast", "fog"):
        out = corrupt(images, kind, 0)
        assert out[images == 0].mean() > 30, kind


def test_geometric_kinds_move_ink_but_keep_most_of_it(images):
    for kind in ("shear", "rotation", "translation", "motion_blur"):
        out = corrupt(images, kind, 0)
        kept = [ink(after) / ink(before) for before, after in zip(images, out, strict=True)]
        assert 0.6 < min(kept) and max(kept) < 1.4, (kind, kept)


def test_scale_shrinks_the_ink_box(images):
    out = corrupt(images, "scale", 0)
    for before, after in zip(images, out, strict=True):
        rows_before, rows_after = np.nonzero(before.any(1))[0], np.nonzero(after.any(1))[0]
        assert np.ptp(rows_after) < 0.6 * np.ptp(rows_before)


def test_warp_with_the_identity_returns_the_image_and_a_shift_moves_it():
    image = np.zeros((28, 28), np.float32)
    image[10, 12] = 200
    assert np.allclose(warp(image, np.eye(2)), image)
    moved = warp(image, np.eye(2), shift=(3.0, -2.0))  # (x, y): right 3, up 2
    assert moved[8, 15] == pytest.approx(200)
