"""The fixed preprocessing map: pixel scaling and PCA/ZCA whitening as one affine transform.

Every option reduces to `features = (pixels - mean) @ matrix` with pixels as floats 0–255,
fit on the training split only. `train` puts it in front of the network as buffers and
`export` folds it into the first layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from digits.atomic import write_npz
from digits.npz import read_npz

Scaling = Literal["none", "unit", "standardize"]
Whitening = Literal["none", "pca", "zca"]
CHUNK_ROWS = 8192


@dataclass(frozen=True)
class AffineTransform:
    """features = (pixels - mean) @ matrix; mean (784,), matrix (784, k), float32."""

    mean: np.ndarray
    matrix: np.ndarray

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Map raw pixels (N, 784) to features (N, k) in float32."""
        X = pixels.astype(np.float32) - self.mean  # (N, 784)
        return X @ self.matrix  # (N, 784) -> (N, k)

    def save(self, path: Path | str) -> None:
        """Write transform.npz atomically."""
        write_npz(path, mean=self.mean.astype(np.float32), matrix=self.matrix.astype(np.float32))

    @classmethod
    def load(cls, path: Path | str) -> AffineTransform:
        """Read transform.npz."""
        mean, matrix = read_npz(path, "mean", "matrix")
        return cls(mean=mean, matrix=matrix)


@dataclass(frozen=True)
class Spectrum:
    """Eigen-decomposition of the scaled training covariance, largest eigenvalue first."""

    eigenvalues: np.ndarray  # (784,)
    eigenvectors: np.ndarray  # (784, 784), columns


def fit_scaling(X: np.ndarray, scaling: Scaling, per_pixel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return (offset, scale) per pixel so that scaled = (pixels - offset) * scale."""
    d = X.shape[1]
    if scaling == "none":
        return np.zeros(d), np.ones(d)
    if scaling == "unit":
        return np.zeros(d), np.full(d, 1 / 255)
    mean, var = column_moments(X)
    if not per_pixel:
        overall = mean.mean()
        # pooled variance around the global mean
        var_all = (var + (mean - overall) ** 2).mean()
        mean, var = np.full(d, overall), np.full(d, var_all)
    std = np.sqrt(var)
    # Constant pixels (std 0) are only centred: dividing would blow up to inf.
    scale = np.where(std > 1e-12, 1 / np.where(std > 1e-12, std, 1), 1.0)
    return mean, scale


def column_moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) variance in float64, chunked to bound memory."""
    total = np.zeros(X.shape[1])
    for start in range(0, len(X), CHUNK_ROWS):
        total += X[start : start + CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean = total / len(X)
    sq = np.zeros(X.shape[1])
    for start in range(0, len(X), CHUNK_ROWS):
        sq += ((X[start : start + CHUNK_ROWS] - mean) ** 2).sum(axis=0)
    return mean, sq / len(X)


def covariance(
    X: np.ndarray, offset: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (784,) and covariance (784, 784) of scaled pixels, accumulated in chunks."""
    mean_raw, _ = column_moments(X)
    C = np.zeros((X.shape[1], X.shape[1]))
    for start in range(0, len(X), CHUNK_ROWS):
        Z = (X[start : start + CHUNK_ROWS] - mean_raw) * scale  # (n, 784), centred and scaled
        C += Z.T @ Z
    return mean_raw, C / len(X)


def eigen_spectrum(C: np.ndarray) -> Spectrum:
    """Symmetric eigen-decomposition, eigenvalues descending and clipped at zero."""
    values, vectors = np.linalg.eigh(C)
    order = np.argsort(values)[::-1]
    return Spectrum(np.clip(values[order], 0, None), vectors[:, order])


def whitening_matrix(spectrum: Spectrum, method: Whitening, epsilon: float, k: int) -> np.ndarray:
    """(784, k) for PCA, (784, 784) for ZCA: maps centred scaled pixels to whitened features."""
    U = spectrum.eigenvectors[:, :k]  # (784, k)
    inv_sqrt = 1 / np.sqrt(spectrum.eigenvalues[:k] + epsilon)  # (k,)
    W = U * inv_sqrt  # (784, k): project then rescale each component
    if method == "zca":
        W = W @ U.T  # (784, k) -> (784, 784): rotate back to pixel space
    return W


def fit_transform(
    X: np.ndarray,
    scaling: Scaling = "none",
    per_pixel: bool = True,
    whitening: Whitening = "none",
    epsilon: float = 1e-1,
    components: int | None = None,
) -> tuple[AffineTransform, Spectrum | None]:
    """Fit scaling then optional whitening on training pixels X (N, 784) as one affine map."""
    offset, scale = fit_scaling(X, scaling, per_pixel)
    if whitening == "none":
        return AffineTransform(offset.astype(np.float32), np.diag(scale).astype(np.float32)), None
    mean, C = covariance(X, offset, scale)
    spectrum = eigen_spectrum(C)
    k = components or X.shape[1]
    W = whitening_matrix(spectrum, whitening, epsilon, k)
    matrix = scale[:, None] * W  # fold the per-pixel scale into the whitening
    return AffineTransform(mean.astype(np.float32), matrix.astype(np.float32)), spectrum


def spectrum_summary(spectrum: Spectrum, k: int) -> dict:
    """Headline figures of the eigenvalue spectrum and the variance the kept components explain."""
    values = spectrum.eigenvalues
    share = np.cumsum(values) / values.sum()
    return {
        "top_eigenvalues": [round(float(v), 6) for v in values[:10]],
        "smallest_eigenvalue": float(values[-1]),
        "nonzero_eigenvalues": int((values > 1e-9 * values[0]).sum()),
        "components_for_90pct": int(np.searchsorted(share, 0.90) + 1),
        "components_for_95pct": int(np.searchsorted(share, 0.95) + 1),
        "components_for_99pct": int(np.searchsorted(share, 0.99) + 1),
        "components_kept": k,
        "variance_explained_by_kept": round(min(float(share[k - 1]), 1.0), 6),
    }
