"""Pictures of a network: first-layer weights in pixel space, hidden codes by PCA (vs sklearn)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA

from pipeline.analysis.network_pictures import first_layer_images, hidden_codes, project_pca
from pipeline.model.network import ModelParams, build_mlp, predict_logits
from pipeline.model.transform import AffineTransform
from tests.conftest import flat_digits


def transform() -> AffineTransform:
    rng = np.random.default_rng(0)
    return AffineTransform(
        mean=rng.uniform(0, 50, 784).astype(np.float32),
        matrix=rng.normal(0, 0.01, (784, 20)).astype(np.float32),
    )


def test_first_layer_images_are_the_strongest_units_mapped_back_to_pixels():
    torch.manual_seed(0)
    model = build_mlp(ModelParams(hidden=(12, 8)), transform())
    W = model.blocks[0].linear.weight.detach().double().numpy()  # (12, 20)
    pixel_space = W @ model.preprocess.matrix.double().numpy().T  # (12, 784)
    strongest = np.argsort(-np.linalg.norm(pixel_space, axis=1))[:5]
    images = first_layer_images(model, 5)
    assert images.shape == (5, 28, 28)
    np.testing.assert_allclose(images.reshape(5, 784), pixel_space[strongest], rtol=1e-5)


def test_hidden_codes_are_what_the_head_reads():
    torch.manual_seed(0)
    model = build_mlp(ModelParams(hidden=(12, 12), residual=True), transform()).eval()
    x, _ = flat_digits(30, 3)
    codes = hidden_codes(model, x)
    assert codes.shape == (30, 12)
    with torch.no_grad():
        logits = model.head(torch.from_numpy(codes)).numpy()
    np.testing.assert_allclose(logits, predict_logits(model, x), rtol=1e-5, atol=1e-5)


def test_project_pca_matches_sklearn_up_to_sign():
    codes = np.random.default_rng(1).normal(size=(200, 6)) * [5, 3, 1, 1, 0.5, 0.1]
    coords, variance = project_pca(codes)
    reference = PCA(n_components=2).fit(codes)
    expected = reference.transform(codes)
    signs = np.sign((coords * expected).sum(axis=0))
    np.testing.assert_allclose(coords * signs, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(variance, reference.explained_variance_ratio_, rtol=1e-6)
