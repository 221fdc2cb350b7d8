import numpy as np
import pytest

from pipeline.transform import AffineTransform, fit_transform


def correlated_pixels(n: int = 4000, seed: int = 0) -> np.ndarray:
    """Pixel-like data (N, 784) with a strongly non-diagonal covariance."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 40)) * np.linspace(30, 3, 40)  # 40 directions, varied scales
    mixing = rng.normal(size=(40, 784)) / 6
    return np.clip(latent @ mixing + 100 + rng.normal(0, 2, size=(n, 784)), 0, 255)


def covariance(F: np.ndarray) -> np.ndarray:
    F = F - F.mean(axis=0)
    return F.T @ F / len(F)


@pytest.mark.parametrize("scaling", ["none", "unit", "standardize"])
def test_pca_features_have_identity_covariance_up_to_epsilon(scaling):
    X = correlated_pixels()
    epsilon, k = 1e-3, 30
    transform, spectrum = fit_transform(
        X, scaling=scaling, whitening="pca", epsilon=epsilon, components=k
    )
    C = covariance(transform.apply(X).astype(np.float64))
    # Each kept component ends with variance λ/(λ+ε): the gap to 1 is at most ε/(λ_k+ε).
    tolerance = epsilon / (spectrum.eigenvalues[k - 1] + epsilon) + 1e-4
    assert C.shape == (k, k)
    assert np.abs(C - np.eye(k)).max() <= tolerance


def test_zca_features_have_identity_covariance_over_kept_components():
    X = correlated_pixels()
    epsilon, k = 1e-2, 25
    transform, spectrum = fit_transform(
        X, scaling="unit", whitening="zca", epsilon=epsilon, components=k
    )
    F = transform.apply(X).astype(np.float64)
    U = spectrum.eigenvectors[:, :k]  # kept directions in pixel space
    C = covariance(F @ U)
    tolerance = epsilon / (spectrum.eigenvalues[k - 1] + epsilon) + 1e-4
    assert F.shape == (len(X), 784)  # ZCA stays in pixel space
    assert np.abs(C - np.eye(k)).max() <= tolerance


def test_larger_epsilon_shrinks_small_components_as_predicted():
    X = correlated_pixels()
    transform, spectrum = fit_transform(X, whitening="pca", epsilon=50.0, components=40)
    variances = np.diag(covariance(transform.apply(X).astype(np.float64)))
    expected = spectrum.eigenvalues[:40] / (spectrum.eigenvalues[:40] + 50.0)
    np.testing.assert_allclose(variances, expected, rtol=1e-3)


def test_standardize_gives_zero_mean_unit_variance_per_pixel_and_handles_constant_pixels():
    X = correlated_pixels(1000)
    X[:, :5] = 0.0  # dead border pixels, as in MNIST
    X[:, 5] = 255.0
    transform, _ = fit_transform(X, scaling="standardize", per_pixel=True)
    F = transform.apply(X).astype(np.float64)
    assert np.isfinite(transform.matrix).all()
    np.testing.assert_allclose(F.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(F[:, 6:].std(axis=0), 1, atol=1e-3)
    np.testing.assert_array_equal(F[:, :6], 0)


def test_global_standardize_uses_one_mean_and_scale_for_all_pixels():
    X = correlated_pixels(1000)
    transform, _ = fit_transform(X, scaling="standardize", per_pixel=False)
    F = transform.apply(X).astype(np.float64)
    assert np.unique(transform.mean).size == 1
    assert abs(F.mean()) < 1e-3 and abs(F.std() - 1) < 1e-3


def test_transform_survives_a_save_load_roundtrip(tmp_path):
    transform, _ = fit_transform(correlated_pixels(500), scaling="unit", whitening="zca")
    transform.save(tmp_path / "t.npz")
    loaded = AffineTransform.load(tmp_path / "t.npz")
    assert loaded.mean.dtype == np.float32 and loaded.matrix.dtype == np.float32
    np.testing.assert_array_equal(loaded.matrix, transform.matrix)
