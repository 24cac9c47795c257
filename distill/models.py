"""Torch models: ReLU MLPs from a spec string and seed 000's analytic sigmoid teacher.

Architecture strings
--------------------
``"64-128-128-10"`` is the MLP ``Linear(64,128) ReLU Linear(128,128) ReLU Linear(128,10)``: the first
width is the number of input features, the last the number of classes (logits, no final ReLU, no
softmax).  Every model in :mod:`distill` maps flat float32 inputs ``(batch, n_features)`` to logits
``(batch, n_classes)``.

Affine view
-----------
:func:`affine_layers` reads any supported model as ``[(W1, b1), ..., (Wk, bk)]`` (float64, ``W`` of
shape ``(out, in)``) with a ReLU between consecutive pairs — the same convention as
:func:`encoders.network.network_from_layers`, which is what the ONNX export and the verifier consume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from encoders.errors import ConfigError, UnsupportedModelError

__all__ = [
    "parse_arch",
    "format_arch",
    "mlp_from_spec",
    "SigmoidTeacher",
    "affine_layers",
    "sequential_from_affines",
    "model_widths",
    "check_arch_matches",
    "logits_of",
    "predict",
    "hidden_activations",
    "eval_mode",
    "param_dtype",
    "ImageClassifier",
    "ResidualBlock",
    "ZOO",
    "ZOO_NAMES",
    "is_zoo_arch",
    "zoo_model",
    "n_parameters",
]


def parse_arch(spec: str | Sequence[int]) -> list[int]:
    """Widths of an MLP spec such as ``"64-128-128-10"`` (or a sequence of ints).

    Raises
    ------
    ConfigError
        Fewer than two widths, a non-integer or a non-positive width.
    """
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.strip().split("-")]
        try:
            widths = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(
                f"--arch {spec!r}: expected widths joined by '-', e.g. 64-128-128-10, or a convolutional "
                f"preset ({', '.join(ZOO)})"
            ) from None
    else:
        try:
            widths = [int(w) for w in spec]
        except (TypeError, ValueError):
            raise ConfigError(f"--arch {spec!r}: expected a sequence of integer widths") from None
        if any(int(w) != w for w in spec):
            raise ConfigError(f"--arch {spec!r}: widths must be integers")
    if len(widths) < 2:
        raise ConfigError(f"--arch {spec!r}: need at least an input and an output width, e.g. 64-10")
    if any(w <= 0 for w in widths):
        raise ConfigError(f"--arch {spec!r}: every width must be a positive integer")
    return widths


def format_arch(widths: Sequence[int]) -> str:
    """Inverse of :func:`parse_arch`: ``[64, 32, 10] -> "64-32-10"``."""
    return "-".join(str(int(w)) for w in widths)


def mlp_from_spec(spec: str | Sequence[int]) -> nn.Sequential:
    """``Linear, ReLU, ..., Linear`` for the widths of ``spec`` (no ReLU after the last layer).

    Parameters are initialised by torch's default (Kaiming-uniform) initialiser, so seed torch first
    for reproducibility.
    """
    widths = parse_arch(spec)
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


class SigmoidTeacher(nn.Module):
    """Seed 000's analytic teacher ``f_T(x; a) = (σ(a·x·1), 1 − σ(a·x·1))``.

    It returns the logits ``(a · Σ_i x_i, 0)``: their softmax is exactly ``(σ(a s), 1 − σ(a s))`` with
    ``s = x·1``, because ``e^{as} / (e^{as} + e^0) = σ(as)``.  Class 0 is predicted iff ``x·1 > 0``
    (for ``a > 0``), matching the labelling of the ``gaussians2d`` data set.  The map is affine,
    ``W = [[a, ..., a], [0, ..., 0]]``, ``b = 0``, so it exports to ONNX and verifies exactly.
    """

    def __init__(self, a: float, dim: int = 2):
        super().__init__()
        if not np.isfinite(a):
            raise ConfigError(f"sigmoid teacher: slope a must be finite, got {a}")
        if int(dim) <= 0:
            raise ConfigError(f"sigmoid teacher: dim must be positive, got {dim}")
        self.a = float(a)
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.a * x.reshape(x.shape[0], -1).sum(dim=1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)

    def affine_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        W = np.zeros((2, self.dim))
        W[0, :] = self.a
        return [(W, np.zeros(2))]

    def extra_repr(self) -> str:
        return f"a={self.a}, dim={self.dim}"


def _flatten_modules(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        out: list[nn.Module] = []
        for m in model:
            out.extend(_flatten_modules(m))
        return out
    return [model]


def affine_layers(model: nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(W, b), ...]`` (float64) of an MLP, with a ReLU between consecutive pairs.

    Supported: (nested) ``nn.Sequential`` of ``nn.Linear``, ``nn.ReLU``, ``nn.Flatten`` and
    ``nn.Identity`` alternating Linear/ReLU and ending with a Linear; and any module with an
    ``affine_layers()`` method (e.g. :class:`SigmoidTeacher`).

    Raises
    ------
    UnsupportedModelError
        Any other module or ordering (two Linears in a row, a trailing ReLU, ...).
    """
    if hasattr(model, "affine_layers") and callable(model.affine_layers):
        return [(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in model.affine_layers()]
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    expect_linear = True
    for m in _flatten_modules(model):
        if isinstance(m, nn.Flatten | nn.Identity):
            continue
        if isinstance(m, nn.Linear) and expect_linear:
            W = m.weight.detach().cpu().double().numpy().copy()
            b = m.bias.detach().cpu().double().numpy().copy() if m.bias is not None else np.zeros(W.shape[0])
            layers.append((W, b))
            expect_linear = False
        elif isinstance(m, nn.ReLU) and not expect_linear:
            expect_linear = True
        else:
            name = type(m).__name__
            raise UnsupportedModelError(
                f"model is not a Linear/ReLU MLP (unexpected {name} at position {len(layers)})", [(name, "")]
            )
    if not layers or expect_linear:
        raise UnsupportedModelError("model is not a Linear/ReLU MLP ending with a Linear layer")
    return layers


def sequential_from_affines(affines: Sequence[tuple[np.ndarray, np.ndarray]]) -> nn.Sequential:
    """The float32 ``nn.Sequential`` MLP with the given ``(W, b)`` layers (ReLU in between)."""
    mods: list[nn.Module] = []
    for i, (W, b) in enumerate(affines):
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        lin = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float64).reshape(-1)))
        mods.append(lin)
        if i < len(affines) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def model_widths(model: nn.Module) -> list[int]:
    """``[n_in, h1, ..., n_out]`` of a model readable by :func:`affine_layers`."""
    aff = affine_layers(model)
    return [aff[0][0].shape[1]] + [W.shape[0] for W, _ in aff]


def check_arch_matches(widths: Sequence[int], n_features: int, n_classes: int, what: str = "--arch") -> None:
    """Raise :class:`ConfigError` unless ``widths[0] == n_features`` and ``widths[-1] == n_classes``."""
    if widths[0] != n_features or widths[-1] != n_classes:
        raise ConfigError(
            f"{what} {format_arch(widths)}: the data has {n_features} features and {n_classes} classes, so "
            f"the first width must be {n_features} and the last {n_classes}"
        )


class eval_mode:  # noqa: N801 - used as a context manager like torch.no_grad
    """Put modules in eval mode for the block and restore each one's previous mode afterwards."""

    def __init__(self, *modules: object):
        self.modules = [m for m in modules if isinstance(m, nn.Module)]
        self._saved: list[list[tuple[nn.Module, bool]]] = []

    def __enter__(self) -> eval_mode:
        self._saved.append([(sub, sub.training) for m in self.modules for sub in m.modules()])
        for m in self.modules:
            m.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        for sub, was in self._saved.pop():
            sub.training = was


ModelFn = Callable[[torch.Tensor], torch.Tensor]


def param_dtype(model: object) -> torch.dtype:
    """The dtype of a module's first floating-point parameter, else of its first floating-point buffer
    (an imported ONNX teacher holds its weights as buffers), else float32."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
        for b in model.buffers():
            if b.is_floating_point():
                return b.dtype
    return torch.float32


def logits_of(model: ModelFn, X: np.ndarray | torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """Logits of ``model`` on ``X`` (eval mode, no grad, in the model's float dtype) as float64 numpy."""
    dt = param_dtype(model)
    Xt = X.to(dt) if isinstance(X, torch.Tensor) else torch.from_numpy(np.array(X, dtype=np.float64)).to(dt)
    outs = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, Xt.shape[0], batch_size):
            outs.append(model(Xt[i : i + batch_size]).double().cpu().numpy())
    if not outs:
        return np.zeros((0, 0))
    return np.concatenate(outs)


def predict(model: ModelFn, X: np.ndarray | torch.Tensor) -> np.ndarray:
    """Predicted classes (argmax of the logits) as int64."""
    return logits_of(model, X).argmax(axis=1).astype(np.int64)


def hidden_activations(model: nn.Module, X: np.ndarray) -> list[np.ndarray]:
    """Post-ReLU activations ``(n, width)`` of every hidden layer, float64, from the affine view."""
    h = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    acts = []
    aff = affine_layers(model)
    for W, b in aff[:-1]:
        h = np.maximum(h @ W.T + b, 0.0)
        acts.append(h)
    return acts


# --------------------------------------------------------------------------------------------------
# the teacher zoo: convolutional presets
# --------------------------------------------------------------------------------------------------
class ImageClassifier(nn.Module):
    """A convolutional teacher on flat inputs: ``forward(x) = native(x.reshape(N, *image_shape))``.

    ``native`` takes image-shaped inputs ``(N, C, H, W)``; it is what gets exported to ONNX (so the
    graph's input shape is the image shape, as a user's CNN would have).  ``arch`` is the zoo preset.
    """

    def __init__(self, arch: str, image_shape: Sequence[int], n_classes: int, native: nn.Module):
        super().__init__()
        self.arch = str(arch)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.n_classes = int(n_classes)
        self.n_inputs = int(np.prod(self.image_shape))
        self.native = native

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.native(x.reshape(x.shape[0], *self.image_shape))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, image_shape={self.image_shape}, n_classes={self.n_classes}"


class ResidualBlock(nn.Module):
    """``relu(x + BN(conv(relu(BN(conv(x))))))`` with 3×3 convolutions keeping the channel count."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


def _flat_size(features: nn.Module, image_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *image_shape)).reshape(1, -1).shape[1])


def _conv_head(
    features: nn.Sequential,
    image_shape: tuple[int, ...],
    hidden: int,
    n_classes: int,
    act: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    n = _flat_size(features, image_shape)
    return nn.Sequential(*features, nn.Flatten(), nn.Linear(n, hidden), act(), nn.Linear(hidden, n_classes))


def _cnn_small(shape: tuple[int, ...], k: int) -> nn.Module:
    """Conv(8) ReLU MaxPool Conv(16) ReLU MaxPool → Linear(32) ReLU → Linear(K)."""
    c = shape[0]
    f = nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip
    return _conv_head(f, shape, 32, k)


def _cnn_large(shape: tuple[int, ...], k: int) -> nn.Module:
    """Conv(32) ReLU Conv(32) ReLU MaxPool Conv(64) ReLU MaxPool → Linear(128) ReLU → Linear(K)
    (≈ 430k parameters on 1×28×28)."""
    c = shape[0]
    f = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip
    return _conv_head(f, shape, 128, k)


def _resnet_mini(shape: tuple[int, ...], k: int) -> nn.Module:
    """Conv(16) BN ReLU, residual block(16), MaxPool, Conv(32) BN ReLU, residual block(32), global average
    pool → Linear(K)."""
    c = shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), ResidualBlock(16),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), ResidualBlock(32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, k),
    )  # fmt: skip


def _cnn_tanh_bn(shape: tuple[int, ...], k: int) -> nn.Module:
    """Conv(16) Tanh BN MaxPool Conv(32) Tanh BN AvgPool → Linear(64) Tanh → Linear(K).  BatchNorm follows
    the Tanh, so it cannot be folded into a convolution and stays a BatchNormalization node."""
    c = shape[0]
    f = nn.Sequential(
        nn.Conv2d(c, 16, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(16), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(32), nn.AvgPool2d(2),
    )  # fmt: skip
    return _conv_head(f, shape, 64, k, act=nn.Tanh)


#: ``--arch`` presets → builder ``(image_shape (C, H, W), n_classes) -> native module``.
ZOO: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "cnn-small": _cnn_small,
    "cnn-large": _cnn_large,
    "resnet-mini": _resnet_mini,
    "cnn-tanh-bn": _cnn_tanh_bn,
}
ZOO_NAMES: tuple[str, ...] = tuple(ZOO)


def is_zoo_arch(arch: str | None) -> bool:
    """Whether ``arch`` names a convolutional preset of :data:`ZOO`."""
    return isinstance(arch, str) and arch.strip().lower() in ZOO


def zoo_model(arch: str, image_shape: Sequence[int] | None, n_classes: int) -> ImageClassifier:
    """A freshly initialised zoo teacher (seed torch first).

    Raises
    ------
    ConfigError
        Unknown preset, or data without an image shape (tabular data has no convolutional layout), or an
        image smaller than 4×4 (two 2×2 poolings).
    """
    key = str(arch).strip().lower()
    if key not in ZOO:
        raise ConfigError(
            f"--arch {arch!r}: unknown preset; choose one of {', '.join(ZOO_NAMES)} or MLP widths"
        )
    if not image_shape or len(image_shape) != 3:
        raise ConfigError(
            f"--arch {arch}: needs image data with a (C, H, W) shape (digits, mnist5k, idx:), "
            f"got {image_shape}"
        )
    shape = tuple(int(d) for d in image_shape)
    if shape[1] < 4 or shape[2] < 4:
        raise ConfigError(f"--arch {arch}: images of {shape[1]}×{shape[2]} are too small (need at least 4×4)")
    native = ZOO[key](shape, int(n_classes))
    _init_weights(native, "tanh" if key == "cnn-tanh-bn" else "relu")
    return ImageClassifier(key, shape, int(n_classes), native)


def _init_weights(module: nn.Module, nonlinearity: str) -> None:
    """He-normal (ReLU nets) or Xavier-normal (Tanh nets) weights and zero biases for every Conv/Linear:
    torch's default (Kaiming-uniform with a = √5) leaves small ReLU CNNs on [0, 1] inputs stuck at the
    uniform prediction for several epochs."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            if nonlinearity == "relu":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain("tanh"))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters()))
