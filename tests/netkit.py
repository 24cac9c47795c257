"""Small helpers shared by the backend and MILP tests: random networks, an independent interval
propagation, pinned encodings, random disjunctive programs and an LP feasibility oracle.

Kept independent of ``encoders.bounds`` on purpose: the backend tests should not lean on the code
whose output they help to check.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from encoders.encode import encode_network
from encoders.network import Network, network_from_layers
from encoders.program import Program, Sense

__all__ = [
    "ibp",
    "f32",
    "random_net",
    "encode_box",
    "close",
    "random_disjunctive",
    "lp_feasible",
    "relu_of_difference",
    "HAND_RELU_CASES",
    "hand_relu_program",
    "assert_feasible",
]


def ibp(net: Network, lo: np.ndarray, hi: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Plain interval propagation: the pre-activation bounds of every affine layer over ``[lo, hi]``.

    The bounds are widened by ``1e-9`` (relative and absolute) so that float rounding never makes
    them unsound for the encodings built from them.
    """
    lows, ups = [], []
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    for k, aff in enumerate(net.affines):
        c, r = (lo + hi) / 2, (hi - lo) / 2
        m, d = aff.W @ c + aff.b, np.abs(aff.W) @ r
        pad = 1e-9 * (np.abs(m) + d) + 1e-9
        zl, zu = m - d - pad, m + d + pad
        lows.append(zl)
        ups.append(zu)
        if k < len(net.affines) - 1:
            lo, hi = np.maximum(zl, 0), np.maximum(zu, 0)
    return lows, ups


def f32(a) -> np.ndarray:
    """Round to float32 and back: ONNX files store float32 weights."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def random_net(seed: int, sizes: list[int]) -> Network:
    """A random ReLU network with float32-representable weights (``W ~ N(0, 1/n_in)``, ``b ~ N(0, 0.3²)``)."""
    rng = np.random.default_rng(seed)
    return network_from_layers(
        [
            (f32(rng.normal(size=(o, i)) / np.sqrt(i)), f32(rng.normal(scale=0.3, size=o)))
            for i, o in zip(sizes[:-1], sizes[1:])
        ]
    )


def encode_box(net: Network, lo: np.ndarray, hi: np.ndarray, pin: np.ndarray | None = None):
    """Encode ``net`` with interval bounds over ``[lo, hi]``; with ``pin`` the input is fixed to it.

    Pinning the input while the bounds stay those of the whole box keeps many ReLUs unstable, so the
    solver really has to decide their phases.  Returns ``(program, encoded_network)``.
    """
    lows, ups = ibp(net, lo, hi)
    p = Program()
    xin = p.add_vars("x", lo if pin is None else pin, hi if pin is None else pin)
    return p, encode_network(p, net, xin, lows, ups)


def close(y: np.ndarray, ref: np.ndarray, tol: float = 1e-6) -> bool:
    """``|y − ref| ≤ tol · max(1, |ref|)`` elementwise."""
    return bool(np.all(np.abs(y - ref) <= tol * np.maximum(1.0, np.abs(ref))))


def random_disjunctive(seed: int):
    """Three variables in ``[-1, 1]``, 0–2 base rows and a disjunction of 2–3 random conjunctions.

    Returns ``(program, base_rows, alternatives)`` so that an LP oracle can decide feasibility.
    """
    rng = np.random.default_rng(seed)
    n = 3
    p = Program()
    x = p.add_vars("x", -np.ones(n), np.ones(n))
    base = [
        Program.row(x, rng.normal(size=n), Sense.LE, rng.uniform(0.0, 1.0)) for _ in range(rng.integers(0, 3))
    ]
    p.rows.extend(base)
    alts = []
    for _ in range(rng.integers(2, 4)):
        alt = []
        for _ in range(rng.integers(1, 4)):
            sense = Sense.EQ if rng.random() < 0.15 else (Sense.LE if rng.random() < 0.5 else Sense.GE)
            alt.append(Program.row(x, rng.normal(size=n), sense, rng.normal() * 1.2))
        alts.append(alt)
    p.add_disjunction(alts)
    return p, base, alts


def lp_feasible(rows, n: int) -> bool:
    """Is the conjunction of ``rows`` feasible over ``[-1, 1]^n``? (scipy's HiGHS LP as the oracle)."""
    A_ub, b_ub, A_eq, b_eq = [], [], [], []
    for r in rows:
        a = np.zeros(n)
        a[r.idx] = r.coef
        if r.sense is Sense.EQ:
            A_eq.append(a)
            b_eq.append(r.rhs)
        else:
            s = 1.0 if r.sense is Sense.LE else -1.0
            A_ub.append(s * a)
            b_ub.append(s * r.rhs)
    res = linprog(
        np.zeros(n),
        A_ub=np.array(A_ub) if A_ub else None,
        b_ub=b_ub or None,
        A_eq=np.array(A_eq) if A_eq else None,
        b_eq=b_eq or None,
        bounds=[(-1, 1)] * n,
        method="highs",
    )
    return res.status == 0


def relu_of_difference(
    y_lower: float | None, y_box: tuple[float, float] = (-5.0, 5.0)
) -> tuple[Program, dict[str, int]]:
    """``x0, x1 ∈ [-1, 1]``, ``z = x0 − x1 ∈ [-2, 2]``, ``y = ReLU(z) ∈ y_box``, and ``y ≥ y_lower``.

    With a ``y_lower`` row it is feasible exactly when ``y_lower ≤ 2`` (``y = 2`` at ``x = (1, −1)``).
    Returns the program and the variable indices ``{"x0", "x1", "z", "y"}``.
    """
    p = Program()
    x = p.add_vars("x", [-1.0, -1.0], [1.0, 1.0])
    z = p.add_var("z", -2.0, 2.0)
    y = p.add_var("y", *y_box)
    p.add_row([x[0], x[1], z], [1.0, -1.0, -1.0], Sense.EQ, 0.0)
    p.add_relu(y, z)
    if y_lower is not None:
        p.add_row([y], [1.0], Sense.GE, y_lower)
    return p, {"x0": int(x[0]), "x1": int(x[1]), "z": z, "y": y}


#: Extra rows ``(variable, sense, rhs)`` on ``y = relu(x0 − x1)`` (``y``'s own bounds loose, ``[-1, 3]``)
#: and the answer worked out by hand.
HAND_RELU_CASES = [
    ([("y", Sense.GE, 1.5)], "sat"),
    ([("y", Sense.GE, 2.5)], "unsat"),  # max relu(x0 − x1) = 2
    ([("y", Sense.LE, -0.1)], "unsat"),  # relu forces y >= 0 despite y's bound -1
    ([("y", Sense.LE, 0.5), ("z", Sense.GE, 1.0)], "unsat"),  # y = z >= 1
    ([("y", Sense.EQ, 0.0), ("z", Sense.GE, 0.5)], "unsat"),
    ([("y", Sense.EQ, 0.0), ("z", Sense.LE, -0.5)], "sat"),
    ([("y", Sense.GE, 1.0), ("x1", Sense.LE, -0.5)], "sat"),  # x = (1, -0.5): y = 1.5
    ([("y", Sense.GE, 1.0), ("x1", Sense.GE, 0.5)], "unsat"),  # y = x0 − x1 <= 0.5
    ([("y", Sense.GE, 1.0), ("x1", Sense.LE, 0.0), ("x0", Sense.LE, 0.4)], "sat"),  # x1 = -1
    ([("y", Sense.GE, 1.0), ("x1", Sense.GE, -0.5), ("x0", Sense.LE, 0.4)], "unsat"),  # <= 0.9
]


def hand_relu_program(extra) -> tuple[Program, dict[str, int]]:
    """:func:`relu_of_difference` with ``y ∈ [-1, 3]`` plus the rows ``extra`` of a hand case."""
    p, var = relu_of_difference(None, (-1.0, 3.0))
    for name, sense, rhs in extra:
        p.add_row([var[name]], [1.0], sense, rhs)
    return p, var


def assert_feasible(prog: Program, x: np.ndarray, tol: float) -> None:
    """Every constraint of ``prog`` holds at ``x`` up to ``tol``."""
    viol = prog.violation(x)
    assert max(viol.values()) <= tol, viol
