"""The MLP: frozen preprocessing buffers in front, hidden blocks, a linear head; and checkpoints.

A block is Linear -> BatchNorm1d (optional) -> activation -> Dropout. With `residual`, a block
whose input is as wide as its output adds its input back (x + block(x), He et al. 2016). A
checkpoint carries the NetSpec that rebuilds the network exactly, so pruned (narrower) and
folded (no BN, no preprocessing) networks load through the same code.
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from digits.atomic import atomic_path
from digits.contract import CLASSES, PIXELS
from digits.errors import DataError, reason
from pipeline.config import require
from pipeline.model.transform import AffineTransform

Activation = Literal[
    "sigmoid",
    "tanh",
    "relu",
    "noisy_relu",
    "leaky_relu",
    "prelu",
    "elu",
    "gelu",
    "silu",
    "swish",
    "softplus",
    "maxout",
]
Init = Literal[
    "default",
    "he_uniform",
    "he_normal",
    "xavier_uniform",
    "xavier_normal",
    "lecun_uniform",
    "lecun_normal",
    "small_normal",
]


@dataclass(frozen=True)
class ModelParams:
    """params.yaml `model:` group."""

    hidden: tuple[int, ...] = (512, 256)
    activation: Activation = "relu"
    leaky_slope: float = 0.01
    maxout_pieces: int = 2
    batchnorm: bool = True
    dropout: float | tuple[float, ...] = 0.2
    init: Init = "he_normal"
    init_gain: float = 1.0  # every initial Linear weight times this (> 1: the exploding demo)
    init_bias: float = 0.0  # every initial Linear bias (large negative: the dead-ReLU demo)
    residual: bool = False  # skip connections between consecutive hidden layers of equal width
    noise_std: float = 0.5  # noisy_relu: std of the noise on the pre-activation (BN: unit variance)

    def __post_init__(self) -> None:
        require(all(w >= 1 for w in self.hidden), "model.hidden", "widths must be >= 1")
        require(self.noise_std >= 0, "model.noise_std", "must be >= 0")
        require(self.init_gain > 0, "model.init_gain", "must be > 0")
        require(self.maxout_pieces >= 2, "model.maxout_pieces", "must be >= 2")
        rates = self.dropout_rates()
        require(
            len(rates) == len(self.hidden),
            "model.dropout",
            f"needs one rate per hidden layer ({len(self.hidden)}) or a single number",
        )
        require(all(0 <= r < 1 for r in rates), "model.dropout", "rates must be in [0, 1)")

    def dropout_rates(self) -> tuple[float, ...]:
        """One dropout rate per hidden layer."""
        if isinstance(self.dropout, tuple):
            return self.dropout
        return (float(self.dropout),) * len(self.hidden)


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a network's modules (weights come from the state dict)."""

    features: int  # width after the preprocessing transform (k)
    hidden: tuple[int, ...]
    activation: str
    leaky_slope: float
    maxout_pieces: int
    batchnorm: bool
    dropout: tuple[float, ...]
    preprocess: bool = True  # False once the transform is folded into the first Linear
    residual: bool = False
    noise_std: float = 0.0

    @classmethod
    def from_params(cls, params: ModelParams, features: int) -> NetSpec:
        """The spec of a freshly built network."""
        return cls(
            features=features,
            hidden=tuple(params.hidden),
            activation=params.activation,
            leaky_slope=params.leaky_slope,
            maxout_pieces=params.maxout_pieces,
            batchnorm=params.batchnorm,
            dropout=params.dropout_rates(),
            residual=params.residual,
            noise_std=params.noise_std if params.activation == "noisy_relu" else 0.0,
        )

    def skips(self) -> tuple[bool, ...]:
        """Per hidden layer: whether it adds its input back (residual, same width as before)."""
        widths = (None, *self.hidden)  # the first layer's input is the features: never a skip
        return tuple(self.residual and widths[i] == widths[i + 1] for i in range(len(self.hidden)))


class Preprocess(nn.Module):
    """features = (pixels - mean) @ matrix, fixed (buffers, never trained)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(PIXELS))
        self.register_buffer("matrix", torch.eye(PIXELS, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.mean  # (N, 784)
        return x @ self.matrix  # (N, 784) -> (N, k)


class Maxout(nn.Module):
    """Max over `pieces` consecutive groups of features: (N, units*pieces) -> (N, units)."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(1, (-1, self.pieces))  # (N, units, pieces)
        return x.amax(dim=2)


class NoisyReLU(nn.Module):
    """relu(x + N(0, std²)) while training, plain relu in eval mode (Nair & Hinton 2010)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            x = x + self.std * torch.randn_like(x)
        return torch.relu(x)


def make_activation(spec: NetSpec, width: int) -> nn.Module:
    """The activation module named by the spec."""
    name = spec.activation
    if name == "noisy_relu":
        return NoisyReLU(spec.noise_std)
    if name == "leaky_relu":
        return nn.LeakyReLU(spec.leaky_slope)
    if name == "prelu":
        return nn.PReLU(width)
    if name == "maxout":
        return Maxout(spec.maxout_pieces)
    modules = {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "elu": nn.ELU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "swish": nn.SiLU,
        "softplus": nn.Softplus,
    }
    return modules[name]()


class Block(nn.Module):
    """Linear -> BatchNorm1d (or identity) -> activation -> Dropout."""

    def __init__(self, spec: NetSpec, fan_in: int, width: int, dropout: float) -> None:
        super().__init__()
        pieces = spec.maxout_pieces if spec.activation == "maxout" else 1
        self.linear = nn.Linear(fan_in, width * pieces)
        self.norm = nn.BatchNorm1d(width * pieces) if spec.batchnorm else nn.Identity()
        self.act = make_activation(spec, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)  # (N, fan_in) -> (N, width*pieces)
        x = self.norm(x)
        x = self.act(x)  # (N, width*pieces) -> (N, width)
        return self.drop(x)


class MLP(nn.Module):
    """Raw pixels (N, 784) in 0–255 -> logits (N, 10)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.preprocess = Preprocess(spec.features) if spec.preprocess else nn.Identity()
        fan_in = spec.features if spec.preprocess else PIXELS
        blocks = []
        for width, rate in zip(spec.hidden, spec.dropout, strict=True):
            blocks.append(Block(spec, fan_in, width, rate))
            fan_in = width
        self.blocks = nn.ModuleList(blocks)
        self.skips = spec.skips()
        self.head = nn.Linear(fan_in, CLASSES)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(pixels)  # (N, 784) -> (N, k)
        for block, skip in zip(self.blocks, self.skips, strict=True):
            x = x + block(x) if skip else block(x)  # (N, width)
        return self.head(x)  # (N, 10)

    def linears(self) -> list[nn.Linear]:
        """Every Linear layer in order, the head last."""
        return [block.linear for block in self.blocks] + [self.head]


def set_transform(model: MLP, transform: AffineTransform) -> None:
    """Load the fitted preprocessing map into the model's buffers."""
    model.preprocess.mean.copy_(torch.from_numpy(np.asarray(transform.mean, dtype=np.float32)))
    model.preprocess.matrix.copy_(torch.from_numpy(np.asarray(transform.matrix, dtype=np.float32)))


def init_weights(
    model: MLP, scheme: str, leaky_slope: float = 0.01, gain: float = 1.0, bias: float = 0.0
) -> None:
    """Initialise every Linear weight by the named scheme, times `gain`; biases start at `bias`."""
    if scheme != "default":
        init_by_scheme(model, scheme, leaky_slope)
    with torch.no_grad():
        for linear in model.linears():
            linear.weight.mul_(gain)
        for block in model.blocks:  # the head's bias would only shift every logit alike
            block.linear.bias.add_(bias)


def init_by_scheme(model: MLP, scheme: str, leaky_slope: float) -> None:
    """Every Linear weight drawn by the named scheme; biases zero."""
    nonlinearity = "leaky_relu" if model.spec.activation == "leaky_relu" else "relu"
    for linear in model.linears():
        W = linear.weight
        fan_in = W.shape[1]
        if scheme == "he_uniform":
            nn.init.kaiming_uniform_(W, a=leaky_slope, nonlinearity=nonlinearity)
        elif scheme == "he_normal":
            nn.init.kaiming_normal_(W, a=leaky_slope, nonlinearity=nonlinearity)
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(W)
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(W)
        elif scheme == "lecun_uniform":
            bound = (3 / fan_in) ** 0.5
            nn.init.uniform_(W, -bound, bound)
        elif scheme == "lecun_normal":
            nn.init.normal_(W, std=(1 / fan_in) ** 0.5)
        elif scheme == "small_normal":
            # Deliberately bad (CS231n's N(0, 0.01)): signals shrink layer by layer without BN.
            nn.init.normal_(W, std=0.01)
        nn.init.zeros_(linear.bias)


def build_mlp(params: ModelParams, transform: AffineTransform) -> MLP:
    """A fresh network from params with the fitted transform in front."""
    model = MLP(NetSpec.from_params(params, features=transform.matrix.shape[1]))
    set_transform(model, transform)
    init_weights(model, params.init, params.leaky_slope, params.init_gain, params.init_bias)
    return model


def save_checkpoint(path: Path | str, model: MLP, **extra: Any) -> None:
    """Write {spec, state_dict, **extra} atomically."""
    payload = {"spec": dataclasses.asdict(model.spec), "state_dict": model.state_dict(), **extra}
    # Through a file object: given a path, torch names the zip's inner folder after the (random)
    # temp file, so identical weights would give different bytes and DVC would see a change.
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(payload, f)


def read_torch_file(path: Path | str, *keys: str) -> dict[str, Any]:
    """The dict a torch file holds, with `keys` in it; DataError naming the file otherwise."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (PermissionError, IsADirectoryError) as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    except pickle.UnpicklingError:  # weights_only also refuses pickled objects other than data
        raise DataError(f"{path} is not a digits checkpoint: not a torch file") from None
    except (RuntimeError, OSError) as err:  # the zip container is cut short or damaged
        raise DataError(f"{path} is not a digits checkpoint: corrupt ({reason(err)})") from None
    except EOFError:  # click would turn this into a bare "Aborted!"
        raise DataError(f"{path} is not a digits checkpoint: empty or truncated") from None
    missing = [key for key in keys if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise DataError(f"{path} is not a digits checkpoint: no {', '.join(missing)} entry")
    return payload


def load_checkpoint(path: Path | str) -> tuple[MLP, dict[str, Any]]:
    """Rebuild the network from a checkpoint; return it (eval mode) and the extra entries."""
    payload = read_torch_file(path, "spec", "state_dict")
    try:
        spec_fields = dict(payload.pop("spec"))
        spec_fields["hidden"] = tuple(spec_fields["hidden"])
        spec_fields["dropout"] = tuple(spec_fields["dropout"])
        model = MLP(NetSpec(**spec_fields))
        model.load_state_dict(payload.pop("state_dict"))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"{path} is not a digits checkpoint: {reason(err)}") from None
    model.eval()
    return model, payload


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits (N, 10) float32 of raw pixels x (N, 784) uint8/float, in eval mode, in batches."""
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = torch.from_numpy(np.asarray(x[start : start + batch_size], dtype=np.float32))
        chunks.append(model(batch).numpy())
    model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, CLASSES), np.float32)
