import numpy as np
import pytest

from pipeline.model.transform import (
    CHUNK_ROWS,
    AffineTransform,
    Spectrum,
    column_moments,
    fit_transform,
    spectrum_summary,
)
from pipeline.model.transform import covariance as chunked_covariance


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


def test_default_transform_is_the_identity_on_pixels():
    X = correlated_pixels(200)
    transform, spectrum = fit_transform(X)
    assert spectrum is None
    np.testing.assert_array_equal(transform.apply(X), X.astype(np.float32))


def test_unit_scaling_divides_by_255_and_nothing_else():
    X = correlated_pixels(200)
    transform, _ = fit_transform(X, scaling="unit")
    np.testing.assert_allclose(transform.apply(X), X / 255, rtol=1e-6, atol=1e-7)


def test_standardize_per_pixel_by_default_matches_sklearn_standard_scaler():
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    X = correlated_pixels(500)
    X[:, :50] = rng.uniform(0, 1, size=(500, 50))  # pixels with std below 1
    X[:, 50] = 7.0  # constant pixel: sklearn and we only centre it
    transform, _ = fit_transform(X, scaling="standardize")
    scaler = StandardScaler().fit(X)
    np.testing.assert_allclose(transform.apply(X), scaler.transform(X), atol=1e-4)
    new = correlated_pixels(20, seed=1)  # unseen images, the constant pixel lit differently
    np.testing.assert_allclose(transform.apply(new), scaler.transform(new), atol=1e-4)


def test_global_standardize_matches_numpy_over_all_pixels_with_unequal_means():
    X = correlated_pixels(1000)
    X[:, :100] *= 0.2  # dark pixels: per-pixel means far from the global mean
    transform, _ = fit_transform(X, scaling="standardize", per_pixel=False)
    np.testing.assert_allclose(transform.apply(X), (X - X.mean()) / X.std(), atol=1e-4)


@pytest.mark.parametrize(
    ("scaling", "whitening"), [("none", "none"), ("standardize", "none"), ("unit", "zca")]
)
def test_transform_and_features_are_float32(scaling, whitening):
    X = correlated_pixels(300)
    transform, _ = fit_transform(X, scaling=scaling, whitening=whitening)
    assert transform.mean.dtype == np.float32 and transform.matrix.dtype == np.float32
    assert transform.apply(X).dtype == np.float32


def test_column_moments_and_covariance_match_numpy_beyond_one_chunk():
    rng = np.random.default_rng(4)
    X = rng.integers(0, 256, size=(2 * CHUNK_ROWS + 123, 3)).astype(np.float64)
    X[:, 2] = X[:, 0] * 0.5 + rng.normal(0, 3, size=len(X))  # correlated columns
    mean, var = column_moments(X)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var, X.var(axis=0), rtol=1e-10)
    scale = np.array([1.0, 0.5, 2.0])
    centre, C = chunked_covariance(X, np.zeros(3), scale)
    np.testing.assert_allclose(centre, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(C, np.cov(X * scale, rowvar=False, bias=True), rtol=1e-10)


def test_spectrum_is_the_full_eigendecomposition_of_the_scaled_covariance():
    X = correlated_pixels(300)  # fewer images than pixels: a singular covariance
    _, spectrum = fit_transform(X, scaling="unit", whitening="pca")
    C = np.cov(X / 255, rowvar=False, bias=True)
    expected = np.clip(np.sort(np.linalg.eigvalsh(C))[::-1], 0, None)
    np.testing.assert_allclose(spectrum.eigenvalues, expected, atol=1e-10)
    assert (spectrum.eigenvalues >= 0).all()  # round-off below zero is clipped
    V, lam = spectrum.eigenvectors, spectrum.eigenvalues
    np.testing.assert_allclose(C @ V[:, :50], V[:, :50] * lam[:50], atol=1e-10)


def test_spectrum_summary_counts_components_by_hand():
    values = np.array([50.0, 30, 10, 5, 3, 2, 0, 0, 0, 0, 0, 0])  # shares 50, 80, 90, 95, 98, 100 %
    spectrum = Spectrum(values, np.eye(12))
    assert spectrum_summary(spectrum, 2) == {
        "top_eigenvalues": [50.0, 30.0, 10.0, 5.0, 3.0, 2.0, 0.0, 0.0, 0.0, 0.0],
        "smallest_eigenvalue": 0.0,
        "nonzero_eigenvalues": 6,
        "components_for_90pct": 3,
        "components_for_95pct": 4,
        "components_for_99pct": 6,
        "components_kept": 2,
        "variance_explained_by_kept": 0.8,
    }
    assert spectrum_summary(spectrum, 12)["variance_explained_by_kept"] == 1.0


def test_spectrum_summary_rounds_to_six_places_and_ignores_round_off_eigenvalues():
    values = np.array([0.1234567, 2e-6, 1e-10, 1e-12])  # the last two are round-off noise
    summary = spectrum_summary(Spectrum(values, np.eye(4)), 1)
    assert summary["top_eigenvalues"] == [0.123457, 2e-6, 0.0, 0.0]
    assert summary["smallest_eigenvalue"] == 1e-12
    assert summary["nonzero_eigenvalues"] == 2
    assert summary["variance_explained_by_kept"] == round(0.1234567 / values.sum(), 6)


def test_spectrum_summary_judges_round_off_relative_to_the_largest_eigenvalue():
    values = np.array([1000.0, 1e-5, 1e-8])  # 1e-8 is below 1e-9 of the largest: round-off
    assert spectrum_summary(Spectrum(values, np.eye(3)), 1)["nonzero_eigenvalues"] == 2
