"""What a trained network looks like: first-layer weights as images, hidden codes in 2-D.

Pure functions on `pipeline.model.network.MLP`; the train stage saves what they return and the
report stage draws it. Reads and writes no files.
"""

from __future__ import annotations

import numpy as np
import torch

from digits.contract import SIDE
from pipeline.compression.pruning import effective_weight
from pipeline.model.network import MLP


def first_layer_images(model: MLP, count: int) -> np.ndarray:
    """The `count` first-layer units with the largest weights, as 28×28 images in pixel space.

    Each row of the first Linear reads the preprocessed features; mapped back through the fixed
    transform (W @ matrix.T) it is the pixel pattern the unit responds to.
    """
    W = effective_weight(model.linears()[0]).double()  # (units, k); the head if no hidden layer
    if model.spec.preprocess:
        W = W @ model.preprocess.matrix.double().T  # (units, k) -> (units, 784)
    strongest = W.norm(dim=1).argsort(descending=True)[:count]
    return W[strongest].reshape(-1, SIDE, SIDE).float().numpy()  # (count, 28, 28)


@torch.no_grad()
def hidden_codes(model: MLP, pixels: np.ndarray) -> np.ndarray:
    """The last hidden layer's output (eval mode) for raw pixels: (N, 784) -> (N, width)."""
    was_training = model.training
    model.eval()
    x = model.preprocess(torch.from_numpy(np.asarray(pixels, dtype=np.float32)))
    for block, skip in zip(model.blocks, model.skips, strict=True):
        x = x + block(x) if skip else block(x)
    model.train(was_training)
    return x.numpy()


def project_pca(codes: np.ndarray, dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Codes projected on their first `dims` principal components, and each one's variance share."""
    X = codes.astype(np.float64) - codes.mean(axis=0)  # (N, width)
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    variance = s**2 / max((s**2).sum(), 1e-300)
    return (X @ Vt[:dims].T).astype(np.float32), variance[:dims]  # (N, dims), (dims,)
