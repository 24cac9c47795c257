"""VNN-LIB parser and writer (``encoders.vnnlib``).

* Every VNN-COMP 2021 file parses, with its box checked against an independent regex reading of the
  file and its output DNF against the property's definition (ACAS Xu 1–4, mnist label from the comment).
* Semantics: random boolean formulas over linear output atoms are rendered to VNN-LIB, parsed, and the
  resulting DNF is compared with a direct evaluation of the formula at random points.
* Outward rounding of derived bounds is checked in exact rational arithmetic.
* Round trips (writer → parser) are exact.
* Every syntax/semantic error is a ``SpecError`` naming the file and the right line.
* Fuzz: mutated real files and random token soup raise nothing but ``SpecError``.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.errors import InputError, SpecError
from encoders.vnnlib import (
    OutputDNF,
    VnnlibSpec,
    local_robustness_vnnlib,
    parse_vnnlib,
    parse_vnnlib_text,
    robustness_dnf,
    vnnlib_text,
    write_vnnlib,
)

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
_BOUND_RE = re.compile(r"^\(assert \((<=|>=) X_(\d+) ([-+0-9.eE]+)\)\)", re.M)


def _regex_box(text: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent reading of a box written as one ``(assert (<= X_i v))`` line per bound."""
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    for op, i, v in _BOUND_RE.findall(text):
        (hi if op == "<=" else lo)[int(i)] = float(v)
    return lo, hi


@functools.cache
def _shared_spec(path: Path) -> VnnlibSpec:
    """Each shared file is parsed once per session (the specs are immutable)."""
    return parse_vnnlib(path)


def _decls(n_in: int, n_out: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in)) + "".join(
        f"(declare-const Y_{j} Real)\n" for j in range(n_out))


def _unit_box(n_in: int) -> str:
    return "".join(f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))\n" for i in range(n_in))


def _check_invariants(spec: VnnlibSpec) -> None:
    assert spec.n_inputs >= 1 and spec.n_outputs >= 1 and len(spec.cases) >= 1
    for lo, hi, dnf in spec.cases:
        assert lo.shape == hi.shape == (spec.n_inputs,)
        assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)
        assert dnf.n_outputs == spec.n_outputs
        for A, b in dnf.alternatives:
            assert A.shape == (b.size, spec.n_outputs)
            assert np.all(np.isfinite(A)) and np.all(np.isfinite(b))


# --------------------------------------------------------------------------------------------------
# the VNN-COMP 2021 files
# --------------------------------------------------------------------------------------------------
@pytest.mark.shared
def test_every_shared_file_parses(vnncomp_root: Path) -> None:
    files = sorted(vnncomp_root.glob("*/*.vnnlib"))
    assert len(files) == 34
    for f in files:
        spec = _shared_spec(f)
        _check_invariants(spec)
        assert spec.path == str(f)
        lo, hi = _regex_box(f.read_text(), spec.n_inputs)
        case = spec.single_case()
        np.testing.assert_array_equal(case.lo, lo)
        np.testing.assert_array_equal(case.hi, hi)
    # every file named by instances.csv is one of them
    for bench in ("acasxu", "mnistfc"):
        for row in csv.reader((vnncomp_root / bench / "instances.csv").open()):
            assert vnncomp_root / bench / row[1].strip() in files


def _rows(spec: VnnlibSpec) -> list[tuple[list[float], float]]:
    ((A, b),) = spec.single_case().dnf.alternatives
    return [(A[r].tolist(), float(b[r])) for r in range(A.shape[0])]


@pytest.mark.shared
def test_acasxu_properties(vnncomp_root: Path) -> None:
    d = vnncomp_root / "acasxu"
    specs = {k: _shared_spec(d / f"prop_{k}.vnnlib") for k in (1, 2, 3, 4)}
    for s in specs.values():
        assert (s.n_inputs, s.n_outputs, len(s.cases), len(s.cases[0].dnf)) == (5, 5, 1, 1)
    # prop 1: unsafe iff COC >= 3.991125645861615  →  -Y_0 <= -3.99…
    assert _rows(specs[1]) == [([-1.0, 0, 0, 0, 0], -3.991125645861615)]
    np.testing.assert_array_equal(specs[1].cases[0].lo, [0.6, -0.5, -0.5, 0.45, -0.5])
    np.testing.assert_array_equal(specs[1].cases[0].hi, [0.679857769, 0.5, 0.5, 0.5, -0.45])
    # prop 2: unsafe iff COC is maximal: Y_j - Y_0 <= 0 for j = 1..4
    e = np.eye(5)
    assert _rows(specs[2]) == [((e[j] - e[0]).tolist(), 0.0) for j in range(1, 5)]
    # props 3, 4: unsafe iff COC is minimal: Y_0 - Y_j <= 0
    for k in (3, 4):
        assert _rows(specs[k]) == [((e[0] - e[j]).tolist(), 0.0) for j in range(1, 5)]
    # prop 4 pins X_2 to 0: a degenerate but non-empty box
    assert specs[4].cases[0].lo[2] == specs[4].cases[0].hi[2] == 0.0


@pytest.mark.shared
def test_mnist_properties(vnncomp_root: Path) -> None:
    files = sorted((vnncomp_root / "mnistfc").glob("prop_*.vnnlib"))
    assert len(files) == 30
    for f in files:
        text = f.read_text()
        label = int(re.search(r"label: (\d+)", text).group(1))
        eps = float(re.search(r"prop_\d+_([0-9.]+)\.vnnlib", f.name).group(1))
        spec = _shared_spec(f)
        assert (spec.n_inputs, spec.n_outputs, len(spec.cases)) == (784, 10, 1)
        dnf = spec.cases[0].dnf
        assert len(dnf) == 9
        expected = robustness_dnf(label, 10)
        for (A, b), (A2, b2) in zip(dnf.alternatives, expected.alternatives):
            assert A.shape == (1, 10)
            np.testing.assert_array_equal(A, A2)
            np.testing.assert_array_equal(b, b2)
        lo, hi = spec.cases[0].lo, spec.cases[0].hi
        assert np.all(hi - lo <= 2 * eps + 1e-6) and np.all(lo >= 0) and np.all(hi <= 1)
        # outputs with the label strictly on top are safe; a tie is unsafe
        y = np.zeros(10)
        y[label] = 1.0
        assert not dnf.contains(y)
        y[(label + 1) % 10] = 1.0
        assert dnf.contains(y)


@pytest.mark.shared
def test_real_file_round_trip(vnncomp_root: Path, tmp_path: Path) -> None:
    for f in (vnncomp_root / "mnistfc" / "prop_3_0.05.vnnlib", vnncomp_root / "acasxu" / "prop_1.vnnlib"):
        s = _shared_spec(f)
        lo, hi, dnf = s.single_case()
        out = write_vnnlib(tmp_path / f.name, lo, hi, dnf, comment=f"copy of {f.name}\nsecond line")
        s2 = parse_vnnlib(out)
        _assert_same_case(s2.single_case(), (lo, hi, dnf))


def _assert_same_case(case, ref) -> None:
    lo, hi, dnf = ref
    np.testing.assert_array_equal(case.lo, lo)
    np.testing.assert_array_equal(case.hi, hi)
    assert len(case.dnf) == len(dnf)
    for (A, b), (A2, b2) in zip(case.dnf.alternatives, dnf.alternatives):
        np.testing.assert_array_equal(A, A2)
        np.testing.assert_array_equal(b, b2)


# --------------------------------------------------------------------------------------------------
# semantics
# --------------------------------------------------------------------------------------------------
def test_vnncomp_multi_case_form() -> None:
    text = _decls(2, 2) + """
(assert (or
    (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_0 Y_1))
    (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 3) (<= Y_1 -1))
    (and (>= X_0 2) (<= X_0 3) (>= X_1 -1) (<= X_1 0) (>= Y_1 Y_0))
))"""
    s = parse_vnnlib_text(text, "m.vnnlib")
    _check_invariants(s)
    assert len(s.cases) == 2 and len(s.boxes) == 2
    (lo0, hi0, d0), (lo1, hi1, d1) = s.cases
    np.testing.assert_array_equal(lo0, [0, 0])
    np.testing.assert_array_equal(hi1, [3, 0])
    assert len(d0) == 2 and len(d1) == 1
    assert s.is_violated_by(np.array([0.5, 0.5]), np.array([0.0, 1.0]))
    assert s.is_violated_by(np.array([0.5, 0.5]), np.array([4.0, -2.0]))
    assert not s.is_violated_by(np.array([2.5, -0.5]), np.array([4.0, -2.0]))
    assert not s.is_violated_by(np.array([1.5, 0.5]), np.array([0.0, 1.0]))  # in no box
    with pytest.raises(SpecError, match="2 input boxes"):
        s.single_case()


def test_global_box_with_output_disjunction_and_extras() -> None:
    text = """; header comment with ( unbalanced parens ) ((
(set-logic QF_LRA)
(declare-fun X_0 () Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= -1 X_0 1.5))          ; chained comparison
(assert (and (>= X_1 -2) (< X_1 (/ 1 3))))
(assert (or (and (= Y_0 1) (> Y_2 (+ Y_1 (* 2 Y_0)))) (not (<= Y_1 (- 4)))))
(check-sat)
(get-model)
"""
    s = parse_vnnlib_text(text)
    lo, hi, dnf = s.single_case()
    np.testing.assert_array_equal(lo, [-1.0, -2.0])
    assert hi[0] == 1.5
    assert Fraction(hi[1]) >= Fraction(1, 3) and Fraction(np.nextafter(hi[1], -1)) < Fraction(1, 3)
    assert len(dnf) == 2
    A, b = dnf.alternatives[0]  # Y_0 <= 1, 1 <= Y_0, Y_1 + 2 Y_0 - Y_2 <= 0
    np.testing.assert_array_equal(A, [[1, 0, 0], [-1, 0, 0], [2, 1, -1]])
    np.testing.assert_array_equal(b, [1, -1, 0])
    A, b = dnf.alternatives[1]  # not(Y_1 <= -4)  →  closure  -Y_1 <= 4
    np.testing.assert_array_equal(A, [[0, -1, 0]])
    np.testing.assert_array_equal(b, [4])
    assert s.check_dims(2, 3) is None
    with pytest.raises(SpecError, match="declares 2 inputs and 3 outputs but net.onnx has 784"):
        s.check_dims(784, 10, "net.onnx")


def test_outward_rounding_is_exact_rational() -> None:
    text = _decls(2, 2) + """
(assert (>= (* 3 X_0) 1))
(assert (<= (* 3 X_0) 2))
(assert (>= (- X_1) -0.7))
(assert (<= (* -10 X_1) 0.1))
(assert (<= (+ Y_0 0.1) 0.3))
(assert (>= (/ Y_1 3) (- 0.1 0.3)))
"""
    lo, hi, dnf = parse_vnnlib_text(text).single_case()

    def is_floor(f: float, q: Fraction) -> bool:  # the largest float <= q
        return Fraction(f) <= q < Fraction(np.nextafter(f, np.inf))

    def is_ceil(f: float, q: Fraction) -> bool:  # the smallest float >= q
        return Fraction(np.nextafter(f, -np.inf)) < q <= Fraction(f)

    assert is_floor(lo[0], Fraction(1, 3)) and is_ceil(hi[0], Fraction(2, 3))
    assert hi[1] == 0.7  # (- X_1) >= -0.7 needs no arithmetic on the constant
    assert is_floor(lo[1], Fraction(0.1) / -10)  # -10 X_1 <= 0.1  ⟺  X_1 >= -0.01
    ((A, b),) = dnf.alternatives
    assert A[0].tolist() == [1, 0] and is_ceil(b[0], Fraction(0.3) - Fraction(0.1))
    # Y_1/3 >= -0.2…  ⟺  -(1/3) Y_1 <= 0.2…: coefficient rounded to nearest, rhs rounded up
    assert A[1].tolist() == [0, -1 / 3] and is_ceil(b[1], Fraction(0.3) - Fraction(0.1))


# A random boolean formula over linear output atoms, rendered to VNN-LIB and evaluated directly.
_OPS = ["<=", ">=", "<", ">"]


@st.composite
def _linear_term(draw, n_out: int):
    kind = draw(st.sampled_from(["var", "const", "sum", "scaled", "diff"]))
    j = draw(st.integers(0, n_out - 1))
    c = draw(st.sampled_from([-2.5, -1.0, 0.0, 0.5, 1.0, 3.0]))
    if kind == "var":
        return f"Y_{j}", lambda y: y[j]
    if kind == "const":
        return repr(c), lambda y: c
    k = draw(st.integers(0, n_out - 1))
    if kind == "sum":
        return f"(+ Y_{j} Y_{k} {c!r})", lambda y: y[j] + y[k] + c
    if kind == "scaled":
        return f"(* {c!r} Y_{j})", lambda y: c * y[j]
    return f"(- Y_{j} Y_{k})", lambda y: y[j] - y[k]


@st.composite
def _formula(draw, n_out: int, depth: int = 0):
    kind = draw(st.sampled_from(["atom", "atom", "and", "or", "not"] if depth < 3 else ["atom"]))
    if kind == "atom":
        op = draw(st.sampled_from(_OPS))
        (ta, fa), (tb, fb) = draw(_linear_term(n_out)), draw(_linear_term(n_out))
        cmp = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
               "<": lambda a, b: a < b, ">": lambda a, b: a > b}[op]
        return f"({op} {ta} {tb})", (lambda y: cmp(fa(y), fb(y))), [lambda y: fa(y) - fb(y)]
    if kind == "not":
        t, f, gaps = draw(_formula(n_out, depth + 1))
        return f"(not {t})", (lambda y: not f(y)), gaps
    kids = draw(st.lists(_formula(n_out, depth + 1), min_size=1, max_size=3))
    text = f"({kind} " + " ".join(k[0] for k in kids) + ")"
    fs = [k[1] for k in kids]
    gaps = [g for k in kids for g in k[2]]
    ev = (lambda y: all(f(y) for f in fs)) if kind == "and" else (lambda y: any(f(y) for f in fs))
    return text, ev, gaps


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n_out=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_dnf_agrees_with_direct_evaluation(data, n_out: int, seed: int) -> None:
    asserts = [data.draw(_formula(n_out)) for _ in range(data.draw(st.integers(1, 3)))]
    text = _decls(1, n_out) + _unit_box(1) + "".join(f"(assert {t})\n" for t, _, _ in asserts)
    try:
        spec = parse_vnnlib_text(text, "f.vnnlib")
    except SpecError as e:
        assert "unsatisfiable as written" in str(e)  # e.g. (<= 1 0): the unsafe region is empty
        spec = None
    rng = np.random.default_rng(seed)
    for y in rng.uniform(-6, 6, size=(40, n_out)):
        gaps = [g(y) for _, _, gs in asserts for g in gs]
        if any(abs(g) < 1e-9 for g in gaps):
            continue  # on a boundary, where strict and non-strict readings differ
        truth = all(f(y) for _, f, _ in asserts)
        got = False if spec is None else spec.is_violated_by(np.array([0.5]), y)
        assert got == truth, (text, y)


# --------------------------------------------------------------------------------------------------
# writer and round trips
# --------------------------------------------------------------------------------------------------
_finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1e-300, 5e-324, 0.1, 1 / 3, 1e300])


@st.composite
def _box_and_dnf(draw):
    n_in, n_out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    a = np.array(draw(st.lists(_finite, min_size=n_in, max_size=n_in)))
    b = np.array(draw(st.lists(_finite, min_size=n_in, max_size=n_in)))
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    alts = []
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.integers(1, 3))
        coef = st.sampled_from([0.0, 1.0, -1.0]) | _finite
        A = np.array(draw(st.lists(st.lists(coef, min_size=n_out, max_size=n_out), min_size=k, max_size=k)))
        rhs = np.array(draw(st.lists(_finite, min_size=k, max_size=k)))
        alts.append((A, rhs))
    return lo, hi, OutputDNF(tuple(alts), n_out)


@settings(max_examples=100, deadline=None)
@given(case=_box_and_dnf())
def test_round_trip_is_exact(case) -> None:
    lo, hi, dnf = case
    simple = dnf.simplified()
    if len(simple) == 0:  # every alternative has a row 0·y <= b < 0: nothing to write
        with pytest.raises(SpecError, match="empty"):
            vnnlib_text(lo, hi, dnf)
        return
    spec = parse_vnnlib_text(vnnlib_text(lo, hi, dnf, comment="round trip"), "rt.vnnlib")
    _check_invariants(spec)
    _assert_same_case(spec.single_case(), (lo + 0.0, hi + 0.0, simple))
    rng = np.random.default_rng(0)
    for y in rng.normal(0, 1e3, (20, dnf.n_outputs)):
        assert spec.single_case().dnf.contains(y) == dnf.contains(y)


def test_write_is_atomic_and_validated(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "p.vnnlib"
    dnf = robustness_dnf(1, 3)
    write_vnnlib(p, [0.0, 0.5], [1.0, 0.5], dnf)
    assert parse_vnnlib(p).single_case().hi.tolist() == [1.0, 0.5]
    before = p.read_text()
    for lo, hi in (([0.0, 0.6], [1.0, 0.5]), ([0.0, np.nan], [1.0, 1.0]), ([0.0], [1.0, 1.0])):
        with pytest.raises(SpecError):
            write_vnnlib(p, lo, hi, dnf)
    assert p.read_text() == before
    assert sorted(os.listdir(p.parent)) == ["p.vnnlib"]  # no temporary file left behind
    with pytest.raises(SpecError, match="empty"):
        write_vnnlib(tmp_path / "q.vnnlib", [0.0], [1.0], OutputDNF((), 2))
    assert not (tmp_path / "q.vnnlib").exists()


def test_always_unsafe_alternative_round_trips() -> None:
    dnf = OutputDNF(((np.zeros((0, 2)), np.zeros(0)),), 2)
    lo, hi, d = parse_vnnlib_text(vnnlib_text([0.0], [1.0], dnf)).single_case()
    assert len(d) == 1 and d.alternatives[0][0].shape == (0, 2)
    assert d.contains(np.array([1e9, -1e9]))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), label=st.integers(0, 9), n_out=st.integers(2, 10),
       eps=st.floats(1e-6, 0.6), seed=st.integers(0, 1000))
def test_local_robustness_round_trip(n: int, label: int, n_out: int, eps: float, seed: int) -> None:
    label %= n_out
    x0 = np.random.default_rng(seed).uniform(0, 1, n)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "lr.vnnlib"
        spec = local_robustness_vnnlib(x0, eps, label, n_out, domain=(0.0, 1.0), path=path)
        back = parse_vnnlib(path)
    _assert_same_case(back.single_case(), spec.single_case())
    lo, hi, dnf = spec.single_case()
    for i in range(n):  # the float box contains the exact ball ∩ [0, 1]
        assert Fraction(lo[i]) <= max(Fraction(x0[i]) - Fraction(eps), Fraction(0))
        assert Fraction(hi[i]) >= min(Fraction(x0[i]) + Fraction(eps), Fraction(1))
        assert 0.0 <= lo[i] <= x0[i] <= hi[i] <= 1.0
    assert len(dnf) == n_out - 1
    y = np.arange(n_out, dtype=float)
    y[label] = n_out + 1.0
    assert not dnf.contains(y)
    y[(label + 1) % n_out] = n_out + 1.0  # a tie with the label is a violation
    assert dnf.contains(y)


def test_local_robustness_bad_arguments() -> None:
    for kwargs in ({"eps": 0.0}, {"eps": -1.0}, {"eps": float("nan")}, {"label": 3}, {"n_outputs": 1},
                   {"x0": [0.5, np.inf]}, {"x0": [5.0, 0.5]}):
        args = {"x0": [0.5, 0.5], "eps": 0.1, "label": 0, "n_outputs": 3} | kwargs
        with pytest.raises(SpecError):
            local_robustness_vnnlib(**args)


# --------------------------------------------------------------------------------------------------
# errors: file and line
# --------------------------------------------------------------------------------------------------
_D = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"  # lines 1-2
_B = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"  # lines 3-4

ERROR_CASES = [
    # (text, line, phrase)
    (_D + "(assert (<= X_0 1)\n(assert (>= X_0 0))\n", 3, "never closed"),
    (_D + _B + "(assert (>= Y_0 0)))\n", 5, "without a matching"),
    (_D + _B + "(assert (>= Y_0 foo))\n", 5, "unknown identifier 'foo'"),
    (_D + _B + "(assert (>= Y_3 0))\n", 5, "undeclared variable Y_3"),
    (_D + "(assert (>= X_0 2))\n(assert (<= X_0 1))\n", 4, "empty input box"),
    (_D + "(assert (<= X_0 1))\n", 1, "no lower bound"),
    (_D + "(assert (>= X_0 0))\n", 1, "no upper bound"),
    (_D + _B + "(assert (>= Y_0 nan))\n", 5, "non-numeric constant"),
    (_D + _B + "(assert (>= Y_0 inf))\n", 5, "non-numeric constant"),
    (_D + _B + "(assert (>= Y_0 1e999))\n", 5, "overflows"),
    (_D + _B + "(assert (>= Y_0 1.2.3))\n", 5, "malformed numeric constant"),
    (_D + _B + "(frobnicate)\n", 5, "unknown command"),
    (_D + _B + "(assert (implies Y_0 0))\n", 5, "unknown operator"),
    (_D + _B + "(assert (ite (<= Y_0 0) true false))\n", 5, "unsupported operator"),
    (_D + _B + "(assert (<= X_0 Y_0))\n", 5, "mixing inputs"),
    ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
     "(assert (<= (+ X_0 X_1) 1))\n", 4, "not a box bound"),
    (_D + _B + "(assert (<= (* Y_0 Y_0) 1))\n", 5, "non-linear"),
    (_D + _B + "(assert (<= (/ Y_0 0) 1))\n", 5, "division by zero"),
    (_D + "(declare-const X_0 Real)\n", 3, "declared twice"),
    ("(declare-const X_1 Real)\n(declare-const Y_0 Real)\n", 1, "X_0 is not"),
    ("(declare-const X_0 Int)\n", 1, "only sort Real"),
    ("(declare-const Z Real)\n", 1, "unsupported variable name"),
    ("(declare-const X_01 Real)\n", 1, "unsupported variable name"),
    ("(declare-const X_0 Real)\n(declare-const X_99999999999999999999 Real)\n", 2, "X_1 is not"),
    (_D + _B + "(assert (<= 1 0))\n", 5, "unsatisfiable as written"),
    (_D + _B + "\n  X_0\n", 6, "expected '('"),
    (_D + _B + '(set-info :source "unterminated\n', 5, "unterminated"),
    (_D + _B + "(assert (<= Y_0 1) (<= Y_0 2))\n", 5, "exactly one formula"),
    (_D + _B + "(assert (+ Y_0 1))\n", 5, "unknown operator '+'"),
    (_D + _B + "(assert (<= (<= Y_0 1) 2))\n", 5, "where a number was expected"),
    (_D + _B + "(assert (<= Y_0))\n", 5, "at least two arguments"),
    (_D + _B + "(assert (<= Y_0 \x01))\n", 5, "unknown identifier"),
    (_D + _B + "(assert " + "(and " * 120 + ")" * 121 + "\n", 5, "nested deeper"),
    ("(declare-const Y_0 Real)\n", 1, "declares no inputs"),
    ("(declare-const X_0 Real)\n(assert (>= X_0 0))\n", 1, "declares no outputs"),
]


@pytest.mark.parametrize("text,line,phrase", ERROR_CASES, ids=[c[2] for c in ERROR_CASES])
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, phrase: str) -> None:
    p = tmp_path / "bad.vnnlib"
    p.write_text(text)
    with pytest.raises(SpecError) as ei:
        parse_vnnlib(p)
    msg = str(ei.value)
    assert isinstance(ei.value, InputError)
    assert msg.startswith(f"{p}:{line}: "), msg
    assert phrase in msg, msg
    assert "\n" not in msg


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such VNN-LIB file"):
        parse_vnnlib(tmp_path / "missing.vnnlib")
    with pytest.raises(SpecError, match="is a directory"):
        parse_vnnlib(tmp_path)
    p = tmp_path / "latin1.vnnlib"
    p.write_bytes(b"(declare-const X_0 Real)\n; caf\xe9\n")
    with pytest.raises(SpecError, match=rf"^{re.escape(str(p))}:2: not UTF-8"):
        parse_vnnlib(p)


def test_disjunct_limit() -> None:
    text = _D + _B + "".join("(assert (or (<= Y_0 1) (>= Y_0 2)))\n" for _ in range(12))
    with pytest.raises(SpecError, match=r"^x\.vnnlib:\d+: the formula expands to more than 1000"):
        parse_vnnlib_text(text, "x.vnnlib", max_disjuncts=1000)
    assert len(parse_vnnlib_text(text, "x.vnnlib", max_disjuncts=5000).single_case().dnf) == 4096


# --------------------------------------------------------------------------------------------------
# fuzz: nothing but SpecError ever escapes
# --------------------------------------------------------------------------------------------------
_SEED_TEXT = _decls(3, 3) + _unit_box(3) + """; comment (
(assert (or (and (>= Y_0 Y_1) (<= (+ Y_2 (* 2 Y_0)) 0.5)) (and (> Y_1 -1e-3))))
(assert (or (and (>= X_0 0) (<= X_0 1) (<= Y_0 Y_1)) (and (>= X_0 0.5) (<= X_0 1) (= Y_2 (/ 1 3)))))
"""
_VOCAB = ["(", ")", "(", ")", "assert", "declare-const", "declare-fun", "X_0", "X_1", "Y_0", "Y_1", "Y_7",
          "Real", "Int", "<=", ">=", "<", ">", "=", "and", "or", "not", "+", "-", "*", "/", "0", "0.5",
          "-1", "1e400", "1e-400", "nan", "inf", ";", "\n", '"', "|", "true", "false", "ite", "()", "X_",
          "check-sat", "\x00", "é", "1/3", "0x10", "_", "X_99999999999999999999"]


def _parse_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "fuzz.vnnlib"
        p.write_bytes(data)
        try:
            spec = parse_vnnlib(p, max_disjuncts=2000)
        except SpecError as e:
            assert str(e).startswith(f"{p}:") and "\n" not in str(e)
            return
        _check_invariants(spec)


@st.composite
def _mutated(draw, seeds: tuple[bytes, ...]):
    """A seed file with 1-6 random edits; positions come from a drawn RNG seed so that edits spread
    over the whole file (hypothesis' own integers favour the start)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup_line", "swap_tokens", "token"]))
        pos = int(rng.integers(0, max(len(data), 1)))
        if kind == "flip" and data:
            data[pos] = int(rng.integers(0, 256)) if rng.random() < 0.2 else int(rng.integers(32, 127))
        elif kind == "insert":
            chunk = st.binary(min_size=1, max_size=4) | st.sampled_from([b"(", b")", b" ", b"\n", b";"])
            data[pos:pos] = draw(chunk)
        elif kind == "delete" and data:
            data[pos:pos + int(rng.integers(1, 9))] = b""
        elif kind == "dup_line":
            lines = bytes(data).split(b"\n")
            i = pos % len(lines)
            lines.insert(int(rng.integers(0, len(lines))), lines[i])
            data = bytearray(b"\n".join(lines))
        elif kind == "swap_tokens":
            toks = re.split(rb"(\s+)", bytes(data))
            i, j = pos % len(toks), int(rng.integers(0, len(toks)))
            toks[i], toks[j] = toks[j], toks[i]
            data = bytearray(b"".join(toks))
        else:
            data[pos:pos] = (" " + draw(st.sampled_from(_VOCAB)) + " ").encode()
    return bytes(data)


def _fuzz_seeds() -> tuple[bytes, ...]:
    seeds = [_SEED_TEXT.encode()]
    from conftest import shared_root

    root = shared_root()
    if root is not None:
        seeds += [(root / "acasxu" / f"prop_{k}.vnnlib").read_bytes() for k in (1, 2)]
    return tuple(seeds)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutated(_fuzz_seeds()))
def test_fuzz_mutated_files(data: bytes) -> None:
    _parse_bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(toks=st.lists(st.sampled_from(_VOCAB), max_size=60))
def test_fuzz_token_soup(toks: list[str]) -> None:
    _parse_bytes(" ".join(toks).encode())
    # and the same soup behind valid declarations and a valid box
    _parse_bytes((_decls(2, 2) + _unit_box(2) + "(assert " + " ".join(toks) + ")").encode())


def test_seed_text_parses() -> None:
    spec = parse_vnnlib_text(_SEED_TEXT)
    _check_invariants(spec)
    assert len(spec.cases) == 2
