"""The one rounding module (issue 12, item 3) and the L2-ball concretisation margin (issue 13, item 9).

The ball term ``A·x0 − r‖A‖₂`` of CROWN over ``ball ∩ box`` cancels two numbers of size about
``|A|(|x0| + r)``; when the centre lies far outside the box, that is far more than the box's magnitude
that the rounding margin used to be scaled by, and the computed bound could land above the exact
minimum.  The exact minimum here is known in closed form (the ball's minimiser lies in the box) and
evaluated in 60-digit decimal arithmetic.
"""

from __future__ import annotations

import ast
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
import pytest

from encoders.bounds import crown_bounds_l2, crown_linear_ball_l2
from encoders.bounds import rounding as R
from encoders.network import network_from_layers

ROOT = Path(__file__).resolve().parents[1]


def _exact_ball_min(w: np.ndarray, x0: np.ndarray, r: float) -> Decimal:
    """``w·x0 − r‖w‖₂`` in 60-digit decimal arithmetic on the float64 values (every float64 is a
    finite decimal, so only the square root is rounded, by ~1e-60)."""
    getcontext().prec = 60
    dot = sum(Decimal(float(a)) * Decimal(float(b)) for a, b in zip(w, x0))
    nrm = sum(Decimal(float(a)) ** 2 for a in w).sqrt()
    return dot - Decimal(float(r)) * nrm


@pytest.mark.parametrize("seed", range(6))
def test_l2_ball_bound_sound_with_the_centre_far_outside_the_box(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4
    lo, hi = np.zeros(n), np.ones(n)
    worst = -np.inf
    for _ in range(40):
        w = rng.normal(size=n)
        w[rng.integers(n)] *= 1e-3
        r = float(10.0 ** rng.uniform(5, 9))
        p = rng.uniform(0.2, 0.8, n)  # the ball's minimiser of w·x, inside the box
        x0 = p + r * w / np.linalg.norm(w)  # far outside the box
        net = network_from_layers([(w[None, :], np.zeros(1))])  # f(x) = w·x
        lb, _ = crown_linear_ball_l2(net, x0, r, np.eye(1), lo, hi)
        exact = _exact_ball_min(w, x0, r)  # = min over ball ∩ box (the minimiser x0 − r w/‖w‖ ≈ p is in it)
        gap = float(Decimal(float(lb[0])) - exact)
        worst = max(worst, gap)
        assert gap <= 0.0, f"lower bound {lb[0]!r} above the exact minimum {exact} by {gap:.3g}"
        # ... and not uselessly loose: within a few ulps of the cancelled magnitudes
        assert -gap <= 1e-9 * (np.abs(w) @ (np.abs(x0) + r)), gap


def test_l2_ball_bound_sound_through_stably_active_layers() -> None:
    """Two stably active ReLU layers (large positive biases on the box): ``f`` is affine on the set,
    ``f(x) = a·x + c`` with ``a = W3 W2 W1`` and ``c`` from the biases, computed here exactly."""
    getcontext().prec = 60
    rng = np.random.default_rng(11)
    lo, hi = np.zeros(3), np.ones(3)
    for _ in range(20):
        Ws = [np.abs(rng.normal(size=(4, 3))), np.abs(rng.normal(size=(4, 4))), rng.normal(size=(1, 4))]
        bs = [np.full(4, 10.0), np.full(4, 10.0), np.zeros(1)]
        net = network_from_layers(list(zip(Ws, bs)))
        D = lambda M: [[Decimal(float(v)) for v in row] for row in np.atleast_2d(M)]  # noqa: E731
        mm = lambda A, B: [[sum(a * b for a, b in zip(row, col)) for col in zip(*B)] for row in A]  # noqa: E731
        a = mm(mm(D(Ws[2]), D(Ws[1])), D(Ws[0]))[0]
        c = mm(D(Ws[2]), [[x] for x in (mm(D(Ws[1]), [[Decimal(10)]] * 4)[i][0] + 10 for i in range(4))])[0][
            0
        ]
        r = float(10.0 ** rng.uniform(5, 8))
        af = np.array([float(v) for v in a])
        p = rng.uniform(0.2, 0.8, 3)
        x0 = p + r * af / np.linalg.norm(af)
        lb = crown_bounds_l2(net, x0, r, lo, hi).lower[-1][0]
        nrm = sum(v * v for v in a).sqrt()
        exact = sum(ai * Decimal(float(xi)) for ai, xi in zip(a, x0)) - Decimal(r) * nrm + c
        assert Decimal(float(lb)) <= exact, (float(lb), exact)


def test_constants_are_defined_once() -> None:
    """``_U``/``_ATOL``/``rounding_tolerance`` are assigned only in encoders/bounds/rounding.py."""
    offenders = []
    for f in list((ROOT / "encoders").rglob("*.py")) + list((ROOT / "verifier").rglob("*.py")):
        if f.name == "rounding.py":
            continue
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if {"_U", "_ATOL", "_EPS"} & set(names) and not isinstance(node.value, ast.Name):
                    offenders.append(f"{f.relative_to(ROOT)}:{node.lineno} {names}")
            if isinstance(node, ast.FunctionDef) and node.name == "rounding_tolerance":
                offenders.append(f"{f.relative_to(ROOT)}:{node.lineno} def rounding_tolerance")
    assert not offenders, offenders
    assert R.U == 2.0**-53 and R.EPS64 == 2 * R.U and R.ATOL == 1e-12
