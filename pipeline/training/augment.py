"""Robustness augmentations of a training batch, in torch: elastic distortion, stroke width,
blur and noise. Each takes raw pixels (B, 784), float 0–255, and a torch Generator, and draws
from it only when called, so a run with them off draws the same numbers as before they existed.

They are deliberately not the corruption benchmark's (pipeline/robustness_sets/corruptions.py):
other code and other parameters. Elastic distortion has no benchmark counterpart; strokes are
thickened or thinned by a random fraction of a 3×3 square dilation/erosion (benchmark: a full
3×3 cross erosion, or a square-then-cross dilation of two pixels); blur is a Gaussian of sigma below
`blur_sigma` (default 1; benchmark: 1–1.5); noise is additive Gaussian on every pixel
(benchmark: Poisson noise on the ink, and salt and pepper).
Reads and writes nothing.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from digits.contract import SIDE


def blur_matrices(sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur along one axis as a matrix per sigma (zero outside): (N,) -> (N, 28, 28)."""
    t = torch.arange(SIDE, dtype=torch.float32)
    offsets = t[:, None] - t[None, :]  # (28, 28): row - column
    s2 = 2 * sigma.clamp_min(1e-3).view(-1, 1, 1) ** 2  # sigma 0 -> identity
    # Exponents floored at -60: subnormal floats would slow the matrix products ~10x.
    band = torch.exp((-(offsets**2) / s2).clamp_min(-60))  # (N, 28, 28)
    whole = torch.exp((-(torch.arange(-SIDE + 1, SIDE) ** 2) / s2.view(-1, 1)).clamp_min(-60))
    return band / whole.sum(dim=1).view(-1, 1, 1)  # a full kernel sums to 1


def smooth(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each (C, 28, 28) map with its own sigma: (N, C, 28, 28)."""
    # As batched matrix products: grouped convolutions, one group per image, are 4-5x slower.
    M = blur_matrices(sigma)[:, None]  # (N, 1, 28, 28)
    return M @ images @ M.transpose(-1, -2)


def elastic_distort(
    x: torch.Tensor, alpha: float, sigma: float, gen: torch.Generator
) -> torch.Tensor:
    """Simard et al. (2003): a random field, Gaussian-smoothed (sigma) and scaled (alpha pixels)."""
    n = x.shape[0]
    field = torch.rand(n, 2, SIDE, SIDE, generator=gen) * 2 - 1  # (N, 2, 28, 28) in [-1, 1]
    field = smooth(field, torch.full((n,), sigma)) * alpha  # displacement in pixels
    identity = torch.eye(2, 3).expand(n, 2, 3)
    grid = F.affine_grid(identity, (n, 1, SIDE, SIDE), align_corners=False)  # (N, 28, 28, 2)
    grid = grid + field.permute(0, 2, 3, 1) * (2 / SIDE)  # pixels -> grid units
    images = F.grid_sample(x.view(n, 1, SIDE, SIDE), grid, align_corners=False)
    return images.view(n, -1)


def neighbour_extremes(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max and min over each pixel's 3×3 square, zero outside: (N, 1, 28, 28) each."""
    # Nine shifted views: ~10x faster than max_pool2d on one-channel images on the CPU.
    padded = F.pad(images, (1, 1, 1, 1))
    views = [padded[..., i : i + SIDE, j : j + SIDE] for i in range(3) for j in range(3)]
    high, low = views[0], views[0]
    for view in views[1:]:
        high, low = torch.maximum(high, view), torch.minimum(low, view)
    return high, low


def vary_strokes(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Thicken half of a `share` of the images and thin the other half, each by a random amount."""
    n = x.shape[0]
    images = x.view(n, 1, SIDE, SIDE)
    dilated, eroded = neighbour_extremes(images)
    u = torch.rand(n, generator=gen)
    amount = torch.rand(n, generator=gen).view(n, 1, 1, 1)
    thicker = (u < share / 2).view(n, 1, 1, 1)
    thinner = ((u >= share / 2) & (u < share)).view(n, 1, 1, 1)
    target = torch.where(thicker, dilated, torch.where(thinner, eroded, images))
    return (images + amount * (target - images)).view(n, -1)


def blur_some(
    x: torch.Tensor, share: float, max_sigma: float, gen: torch.Generator
) -> torch.Tensor:
    """Gaussian blur of a `share` of the images, sigma uniform in [0, max_sigma)."""
    n = x.shape[0]
    chosen = torch.rand(n, generator=gen) < share
    sigma = torch.rand(n, generator=gen) * max_sigma
    picked = chosen.nonzero().squeeze(1)  # only these are computed: the rest stay exact
    out = x.clone()
    out[picked] = smooth(x[picked].view(-1, 1, SIDE, SIDE), sigma[picked]).view(-1, SIDE * SIDE)
    return out


def add_noise(x: torch.Tensor, share: float, max_std: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian pixel noise on a `share` of the images, std uniform in [0, max_std], clipped."""
    n = x.shape[0]
    std = torch.rand(n, 1, generator=gen) * max_std * (torch.rand(n, 1, generator=gen) < share)
    return (x + std * torch.randn(x.shape, generator=gen)).clamp(0, 255)
