"""Data sets: bundled ones, IDX files written here (raw and .gz), CSV/NPZ, splits and errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from distill.data import (
    GAUSSIANS2D_BOX,
    Dataset,
    gaussians2d,
    load_dataset,
    read_idx,
    write_idx,
)
from encoders.errors import ConfigError, DataError, InputError


def _check(d: Dataset) -> None:
    assert d.X_train.dtype == np.float32 and d.X_test.dtype == np.float32
    assert d.y_train.dtype == np.int64 and d.y_test.dtype == np.int64
    assert d.X_train.shape[1] == d.n_features == d.X_test.shape[1]
    assert d.domain_lo.shape == d.domain_hi.shape == (d.n_features,)
    assert len(d.class_names) == d.n_classes
    for X in (d.X_train, d.X_test):
        assert np.all(d.domain_lo.astype(np.float32) <= X) and np.all(d.domain_hi.astype(np.float32) >= X)
    for y in (d.y_train, d.y_test):
        assert y.min() >= 0 and y.max() < d.n_classes
    assert not d.X_train.flags.writeable


def test_digits() -> None:
    d = load_dataset("digits", seed=0)
    _check(d)
    assert (d.n_features, d.n_classes) == (64, 10)
    assert len(d.y_train) + len(d.y_test) == 1797
    assert len(d.y_test) == round(0.25 * 1797)
    assert d.X_train.max() == 1.0 and d.X_train.min() == 0.0
    assert np.all(np.bincount(d.y_test, minlength=10) >= 40)  # stratified


def test_mnist5k() -> None:
    d = load_dataset("mnist5k", seed=0, test_fraction=0.2)
    _check(d)
    assert (d.n_features, d.n_classes) == (784, 10)
    assert len(d.y_train) + len(d.y_test) == 5000 and len(d.y_test) == 1000
    assert np.all(np.bincount(d.y_test) == 100)


def test_splits_are_deterministic_in_the_seed() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.X_train, c.X_train)


def test_gaussians2d_geometry() -> None:
    X, y = gaussians2d(seed=0)
    s = X.sum(axis=1)
    assert np.all((s > 0) == (y == 0)) and np.all(s != 0)
    assert np.all(np.abs(X) <= GAUSSIANS2D_BOX)
    assert np.bincount(y).tolist() == [1000, 1000]
    # truncated N(±(1,1), I): the class means sit on the correct side, roughly at ±(1.2, 1.2)
    assert X[y == 0].mean(axis=0) == pytest.approx([1.2, 1.2], abs=0.15)
    d = load_dataset("gaussians2d", seed=0)
    _check(d)
    assert d.domain_lo.tolist() == [-3.0, -3.0] and d.domain_hi.tolist() == [3.0, 3.0]


def _write_mnist_like(folder, gz: bool, with_test: bool, n: int = 30, prefix: str = "") -> tuple:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
    labs = (np.arange(n) % 3).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}train-images-idx3-ubyte{ext}", imgs)
    write_idx(folder / f"{prefix}train-labels-idx1-ubyte{ext}", labs)
    if with_test:
        write_idx(folder / f"{prefix}t10k-images-idx3-ubyte{ext}", imgs[:9])
        write_idx(folder / f"{prefix}t10k-labels-idx1-ubyte{ext}", labs[:9])
    return imgs, labs


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_raw_and_gz(tmp_path, gz: bool) -> None:
    imgs, labs = _write_mnist_like(tmp_path, gz, with_test=False)
    raw = (tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}").read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == gz
    header = gzip.decompress(raw)[:16] if gz else raw[:16]
    assert header == bytes([0, 0, 8, 3, 0, 0, 0, 30, 0, 0, 0, 4, 0, 0, 0, 3])  # magic 0x0803, dims
    np.testing.assert_array_equal(read_idx(tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}"), imgs)
    d = load_dataset(f"idx:{tmp_path}", seed=1, test_fraction=0.3)
    _check(d)
    assert (d.n_features, d.n_classes) == (12, 3)
    assert d.image_shape == (1, 4, 3)
    allX = np.concatenate([d.X_train, d.X_test])
    np.testing.assert_allclose(np.sort(allX.sum(1)), np.sort(imgs.reshape(30, -1).sum(1) / 255.0), rtol=1e-5)


def test_idx_official_split_and_prefix(tmp_path) -> None:
    imgs, labs = _write_mnist_like(tmp_path, gz=True, with_test=True, prefix="fashion-")
    d = load_dataset(f"idx:{tmp_path}/fashion-", seed=0)
    assert len(d.y_train) == 30 and len(d.y_test) == 9
    np.testing.assert_allclose(d.X_test, imgs[:9].reshape(9, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, labs[:9])


def test_read_idx_other_dtypes(tmp_path) -> None:
    for arr in (np.arange(6, dtype=np.int16).reshape(2, 3) - 3, np.linspace(0, 1, 4).astype(np.float32)):
        write_idx(tmp_path / "a.idx", arr)
        got = read_idx(tmp_path / "a.idx")
        assert got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)


def test_idx_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="train-images"):
        load_dataset(f"idx:{tmp_path}")
    bad = tmp_path / "x.idx"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)
    bad.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5]) + b"abc")  # says 5 bytes, has 3
    with pytest.raises(DataError, match="data bytes"):
        read_idx(bad)
    bad.write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1]) + b"a")
    with pytest.raises(DataError, match="type"):
        read_idx(bad)
    _write_mnist_like(tmp_path, gz=False, with_test=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="labels"):
        load_dataset(f"idx:{tmp_path}")


def test_csv(tmp_path) -> None:
    rows = ["f1,f2,label"] + [f"{i * 0.1:.1f},{-i},{'cat' if i % 2 else 'dog'}" for i in range(12)]
    p = tmp_path / "d.csv"
    p.write_text("\n".join(rows) + "\n")
    d = load_dataset(f"csv:{p}", seed=0)
    _check(d)
    assert d.class_names == ("cat", "dog") and d.n_features == 2
    assert d.domain_lo.tolist() == [0.0, -11.0] and d.domain_hi.tolist() == pytest.approx([1.1, 0.0])
    p.write_text("1,2,0\n3,x,1\n4,5,0\n6,7,1\n")
    with pytest.raises(DataError, match="line 2, column 2"):
        load_dataset(f"csv:{p}")


def test_npz_with_split_domain_and_names(tmp_path) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.random((20, 3)), np.arange(20) % 2
    p = tmp_path / "d.npz"
    np.savez(
        p,
        X=X,
        y=y,
        X_test=X[:5],
        y_test=y[:5],
        domain_lo=np.zeros(3),
        domain_hi=np.ones(3),
        class_names=np.array(["neg", "pos"]),
    )
    d = load_dataset(f"npz:{p}")
    _check(d)
    assert len(d.y_train) == 20 and len(d.y_test) == 5 and d.class_names == ("neg", "pos")
    assert d.domain_hi.tolist() == [1.0, 1.0, 1.0]
    np.savez(p, X=X, y=y, domain_lo=np.zeros(3), domain_hi=np.full(3, 0.5))
    with pytest.raises(DataError, match="outside"):
        load_dataset(f"npz:{p}")
    np.savez(p, features=X)
    with pytest.raises(DataError, match="'X' and 'y'"):
        load_dataset(f"npz:{p}")


def test_integer_labels_with_gaps_are_renumbered(tmp_path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, X=np.arange(16.0).reshape(8, 2), y=np.array([2, 10, 2, 10, 2, 10, 2, 10]))
    d = load_dataset(f"npz:{p}", test_fraction=0.5)
    assert d.class_names == ("2", "10") and d.n_classes == 2


@pytest.mark.parametrize(
    ("name", "exc", "needle"),
    [
        ("cifar10", DataError, "unknown data set"),
        ("csv:/nonexistent/gone.csv", DataError, "gone.csv"),
        ("npz:/nonexistent/x.npz", DataError, "x.npz"),
        ("idx:", DataError, "missing path"),
    ],
)
def test_bad_names(name: str, exc: type, needle: str) -> None:
    with pytest.raises(exc, match=needle) as info:
        load_dataset(name)
    assert isinstance(info.value, InputError) and "\n" not in str(info.value)


def test_bad_test_fraction() -> None:
    with pytest.raises(ConfigError, match="--test-fraction"):
        load_dataset("digits", test_fraction=1.0)
