"""Encoding VNN-LIB 2.0 queries (:mod:`encoders.vnnlib2`) over several networks as one program.

Every declared network is an *instance*: its ONNX file's :class:`~encoders.network.Network` under a
name space.  ``(equal-to N)`` copies are further instances of the same IR.  A declared hidden tensor
``(declare-hidden H float32 [..] "name")`` is exposed by cutting the ONNX graph at the tensor (or the
node) called ``name`` (:func:`hidden_network`): the sub-network from the inputs to ``H`` is a network
of its own, encoded exactly on the *same* input variables, so ``H`` is a function of the input just
as in the original graph.

Violation program for a group of DNF terms (:class:`QueryProperty`)
-------------------------------------------------------------------
For the terms of the query that share their input structure (same constant input bounds, same
equalities between inputs, same coupling of two copies), one program

.. math::

    \\exists x^{(1)} \\in B_1, \\dots:\\;
    y^{(i)} = f_i(x^{(i)}),\\; h^{(i)} = g_i(x^{(i)}),\\;
    \\bigvee_{t} \\bigwedge_{a \\in t} a(x, h, y)

is built, each network encoded exactly (:func:`encoders.encode.encode_network`, bounds over its box).
Three input structures get a better encoding than "separate variables and rows":

* **shared input** (product network): atoms ``u − v <= 0`` and ``v − u <= 0`` between input elements of
  two *different* instances make ``v`` the same program variable as ``u`` (the product encoding of
  :class:`~encoders.properties.Disagreement`); the box of ``u`` is the intersection of both.
* **two copies, L∞ coupling**: two instances of the *same* ONNX file with equal boxes and
  ``|x_i − x'_i| <= δ`` for every element (one δ) get, besides the coupling rows, the twin-network
  difference rows of :class:`~encoders.properties.GlobalRobustness` (twin bounds,
  :mod:`encoders.bounds.twin`; every real pair satisfies them, so they cut off no execution pair).
* **two copies, L2 coupling**: the atom ``Σ_i (x_i − x'_i)² <= δ²`` becomes difference variables
  ``d = x − x'`` with ``|d_i| <= δ`` and the ball ``‖d‖₂ <= δ`` (quadratic backends) or lazy tangent
  cuts (:meth:`QueryProperty.refine`), plus the twin rows for the L2 coupling.

Every other atom becomes a linear row; its right-hand side is rounded up (:meth:`Atom.rhs_up`) and a
strict inequality is read as its closure (a superset of the unsafe region: sound for ``unsat``).  A
candidate is a witness only if every atom of one term holds *exactly* (strictness included) on the
values onnxruntime computes for the float32 inputs (:meth:`QueryProperty.violated`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .bounds import crown_bounds, interval_bounds
from .bounds.twin import twin_bounds
from .encode import encode_network
from .errors import SpecError, UnsupportedModelError
from .network import Network, load_onnx
from .program import LinearRow, Program, Sense, Tag
from .vnnlib2 import Atom, NetworkDecl, Query, TensorVar

__all__ = ["Instance", "QueryProperty", "UnboundedInputError", "hidden_network", "plan_query", "f32_inward"]


# ==================================================================================================
# instances and hidden nodes
# ==================================================================================================
@dataclass(frozen=True, eq=False)
class Instance:
    """One declared network: its name space, IR, and one sub-network per declared hidden tensor."""

    decl: NetworkDecl
    ns: str
    net: Network
    root: str  # the network whose ONNX file implements it
    hidden: tuple[tuple[TensorVar, Network], ...] = ()

    @property
    def input(self) -> TensorVar:
        return self.decl.inputs[0]

    @property
    def output(self) -> TensorVar:
        return self.decl.outputs[0]

    def hidden_ns(self, t: TensorVar) -> str:
        return f"{self.ns}#{t.name}"


def hidden_network(path: str | Path, onnx_name: str, shape: Sequence[int], workdir: str | Path) -> Network:
    """The sub-network of ``path`` from its input to the tensor (or node) ``onnx_name``.

    Only the nodes that the tensor depends on are kept; the result is read by
    :func:`~encoders.network.load_onnx` like any network, so it is translated (or refused) by the same
    code as the full one.  Raises :class:`SpecError` when no tensor or node has that name.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    target = onnx_name
    if target not in producers:
        by_name = [n for n in g.node if n.name == onnx_name]
        if by_name and by_name[0].output:
            target = by_name[0].output[0]
        elif any(i.name == onnx_name for i in g.input):
            target = onnx_name
        else:
            raise SpecError(
                f"{path}: the query names hidden node {onnx_name!r}, but the ONNX graph has "
                "no tensor or node of that name"
            )
    keep: set[str] = set()
    todo = [target]
    while todo:
        t = todo.pop()
        n = producers.get(t)
        if n is None or id(n) in keep:
            continue
        keep.add(id(n))  # type: ignore[arg-type]
        todo.extend(i for i in n.input if i)
    nodes = [n for n in g.node if id(n) in keep]
    elem = onnx.TensorProto.FLOAT
    for vi in (*g.value_info, *g.output):
        if vi.name == target:
            elem = vi.type.tensor_type.elem_type
    if not nodes:
        raise SpecError(f"{path}: hidden node {onnx_name!r} is a graph input, not a computed tensor")
    used = {i for n in nodes for i in n.input}
    sub = helper.make_graph(
        nodes,
        f"{g.name}_to_{target}",
        [i for i in g.input if i.name in used or i.name not in {t.name for t in g.initializer}],
        [helper.make_tensor_value_info(target, elem, list(shape))],
        [t for t in g.initializer if t.name in used],
    )
    m2 = helper.make_model(sub, opset_imports=list(model.opset_import), producer_name="distillcert-hidden")
    m2.ir_version = model.ir_version
    out = Path(workdir) / f"hidden_{abs(hash((str(path), target))) % 10**12}.onnx"
    onnx.save(m2, str(out))
    try:
        return load_onnx(out)
    except UnsupportedModelError as ex:
        raise UnsupportedModelError(f"{path}: hidden node {onnx_name!r}: {ex}") from None


# ==================================================================================================
# float32 witnesses
# ==================================================================================================
def f32_inward(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``x`` clipped to ``[lo, hi]`` and rounded to float32 values that still lie in ``[lo, hi]``.

    onnxruntime evaluates float32 inputs; a witness is reported on exactly those values, so they must
    satisfy the bounds themselves.  Where no float32 lies in ``[lo, hi]`` the nearest one is kept (the
    exact check then rejects the witness).
    """
    x = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
    x32 = x.astype(np.float32)
    over = x32.astype(np.float64) > hi
    x32[over] = np.nextafter(x32[over], np.float32(-np.inf))
    under = x32.astype(np.float64) < lo
    x32[under] = np.nextafter(x32[under], np.float32(np.inf))
    return x32.astype(np.float64)


# ==================================================================================================
# planning: terms → groups with one input structure
# ==================================================================================================
@dataclass(frozen=True, eq=False)
class Coupling:
    """``‖x_a − x_b‖_norm <= delta`` between the inputs of instances ``a`` and ``b`` (same ONNX file)."""

    a: str
    b: str
    norm: str  # "inf" | "2"
    delta: float


@dataclass(frozen=True, eq=False)
class _TermPlan:
    lo: np.ndarray  # per flat input variable (inf where the variable is not an input)
    hi: np.ndarray
    alias: tuple[tuple[int, int], ...]  # (v, u): input v is the same variable as input u
    coupling: Coupling | None
    rest: tuple[Atom, ...]  # atoms left as rows
    term: tuple[Atom, ...]  # all atoms (the exact check)


def _flat_of(inst: Instance) -> np.ndarray:
    return inst.input.indices


class UnboundedInputError(SpecError):
    """An input element without a constant lower or upper bound in some disjunct."""


def _plan_term(
    query: Query, term: tuple[Atom, ...], insts: Sequence[Instance], pin: float | None = None
) -> _TermPlan:
    n = query.n_vars
    is_in = query.kind_mask("input")
    owner = np.full(n, -1)
    for k, inst in enumerate(insts):
        owner[_flat_of(inst)] = k
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    rest: list[Atom] = []
    pair_le: dict[tuple[int, int], Fraction] = {}  # (u, v) -> r for atoms u - v <= r (unit coefficients)
    pair_atoms: dict[tuple[int, int], Atom] = {}
    quad: list[Atom] = []
    for a in term:
        if a.quad:
            quad.append(a)
            continue
        vs = list(a.coefs)
        if len(vs) == 1 and is_in[vs[0]]:
            v, c = vs[0], a.coefs[vs[0]]
            b = a.rhs / c
            if c > 0:
                hi[v] = min(hi[v], _down_up(b, up=True))
            else:
                lo[v] = max(lo[v], _down_up(b, up=False))
            continue
        if (
            len(vs) == 2
            and all(is_in[v] for v in vs)
            and not a.strict
            and sorted(a.coefs.values()) == [-1, 1]
        ):
            u = next(v for v in vs if a.coefs[v] == 1)
            w = next(v for v in vs if a.coefs[v] == -1)
            pair_le[(u, w)] = min(pair_le.get((u, w), a.rhs), a.rhs)
            pair_atoms[(u, w)] = a
        rest.append(a)
    # shared inputs: u - w <= 0 and w - u <= 0 between different instances
    alias: dict[int, int] = {}
    used_atoms: set[int] = set()
    for (u, w), r in pair_le.items():
        if r == 0 and pair_le.get((w, u)) == 0 and owner[u] != owner[w] and u < w:
            root = alias.get(u, u)
            if w not in alias:
                alias[w] = root
                used_atoms.update((id(pair_atoms[(u, w)]), id(pair_atoms[(w, u)])))
    # two copies coupled element-wise (L∞) or by an L2 ball
    coupling = None
    if len(insts) == 2 and insts[0].root == insts[1].root and not alias:
        A, B = (_flat_of(i) for i in insts)
        if A.size == B.size:
            ds = [pair_le.get((int(u), int(w))) for u, w in zip(A, B)] + [
                pair_le.get((int(w), int(u))) for u, w in zip(A, B)
            ]
            if all(d is not None for d in ds) and len(set(ds)) == 1 and ds[0] > 0:
                coupling = Coupling(insts[0].ns, insts[1].ns, "inf", _down_up(ds[0], up=True))
                for u, w in zip(A, B):
                    used_atoms.update((id(pair_atoms[(int(u), int(w))]), id(pair_atoms[(int(w), int(u))])))
            for q in quad if coupling is None else ():
                d2 = _l2_coupling(q, A, B)
                if d2 is not None:
                    coupling = Coupling(insts[0].ns, insts[1].ns, "2", d2)
                    used_atoms.add(id(q))
                    break
    for q in quad:
        if id(q) not in used_atoms:
            raise SpecError(
                f"{query.path}:{q.line or '?'}: cannot encode a non-linear constraint "
                "(only the L2 coupling of two equal-to copies is supported)"
            )
    for w in list(alias):  # resolve chains: every aliased input points at its smallest equal input
        u = alias[w]
        while u in alias:
            u = alias[u]
        alias[w] = u
    for w, u in alias.items():  # the root's box is the intersection of all the equal inputs' boxes
        lo[u], hi[u] = max(lo[u], lo[w]), min(hi[u], hi[w])
    for w, u in alias.items():
        lo[w], hi[w] = lo[u], hi[u]
    rest = [a for a in rest if id(a) not in used_atoms]
    bad = np.flatnonzero(is_in & ~(np.isfinite(lo) & np.isfinite(hi)))
    if bad.size and pin is not None:  # a sub-box of the input region (plan_query: only sat may follow)
        lo_b, hi_b = lo[bad], hi[bad]
        lo[bad] = np.where(
            np.isfinite(lo_b), lo_b, np.minimum(np.where(np.isfinite(hi_b), hi_b, 0.0), 0.0) - pin
        )
        hi[bad] = np.where(np.isfinite(hi_b), hi_b, np.maximum(lo[bad], 0.0) + pin)
        bad = bad[:0]
    if bad.size:
        t, k = query.var_of(int(bad[0]))
        side = "lower" if not np.isfinite(lo[bad[0]]) else "upper"
        raise UnboundedInputError(
            f"{query.path}: input {t.element_name(k)} has no constant {side} bound "
            "(every input element needs one in every disjunct)"
        )
    empty = np.flatnonzero(is_in & (lo > hi))
    if empty.size:
        return _TermPlan(lo, hi, (), None, (_FALSE,), term)
    return _TermPlan(lo, hi, tuple(sorted(alias.items())), coupling, tuple(rest), term)


_FALSE = Atom({}, Fraction(-1))  # 0 <= -1


def _down_up(q: Fraction, up: bool) -> float:
    from .vnnlib2 import _round_down, _round_up

    return _round_up(q) if up else _round_down(q)


def _l2_coupling(q: Atom, A: np.ndarray, B: np.ndarray) -> float | None:
    """δ when ``q`` is exactly ``Σ_i (A_i − B_i)² <= δ²`` (no linear part), else ``None``."""
    if q.coefs or q.strict or q.rhs <= 0:
        return None
    want: dict[tuple[int, int], Fraction] = {}
    for u, w in zip(A.tolist(), B.tolist()):
        want[(u, u)] = want.get((u, u), Fraction(0)) + 1
        want[(w, w)] = want.get((w, w), Fraction(0)) + 1
        key = (min(u, w), max(u, w))
        want[key] = want.get(key, Fraction(0)) - 2
    if {k: v for k, v in q.quad.items() if v} != {k: v for k, v in want.items() if v}:
        return None
    r = float(q.rhs) ** 0.5
    while r * r < q.rhs:  # round the radius up: the encoded ball contains the written one
        r = float(np.nextafter(r, np.inf))
    return r


def plan_query(
    query: Query, insts: Sequence[Instance], bounds: str = "crown", pin: float | None = None
) -> list[QueryProperty]:
    """The query as a list of :class:`QueryProperty` (sat iff one of them is violated).

    Every input element needs constant bounds in every disjunct (else :class:`UnboundedInputError`).
    With ``pin``, an unbounded side is replaced by a finite one (``±pin`` around 0 or the other bound):
    the properties then describe a *sub-region* of the query, so a witness of theirs is one of the
    query, but their infeasibility proves nothing about it.
    """
    groups: dict[bytes, list[_TermPlan]] = {}
    for term in query.terms:
        p = _plan_term(query, term, insts, pin)
        if p.rest == (_FALSE,):
            continue  # an empty input box: this term is unsatisfiable
        key = (
            p.lo.tobytes()
            + p.hi.tobytes()
            + repr(p.alias).encode()
            + (repr((p.coupling.norm, p.coupling.delta)) if p.coupling else "").encode()
        )
        groups.setdefault(key, []).append(p)
    return [QueryProperty(query, tuple(insts), tuple(ps)) for ps in groups.values()]


# ==================================================================================================
# the property
# ==================================================================================================
@dataclass(frozen=True, eq=False)
class QueryProperty:
    """A group of DNF terms with one input structure; the protocol of :mod:`encoders.properties`.

    Name spaces: one per instance (``Instance.ns``) and one per hidden tensor (``ns#H``), all fed the
    instance's input.  After a successful :meth:`violated`, :attr:`witness` holds the full assignment
    of the query's flat variable space (float32 inputs, onnxruntime's outputs and hidden values).
    """

    query: Query
    insts: tuple[Instance, ...]
    plans: tuple[_TermPlan, ...]
    witness: list = field(default_factory=list)

    @property
    def flat_lo(self) -> np.ndarray:
        """Lower bounds of every flat query variable (``-inf`` off the inputs)."""
        return self.plans[0].lo

    @property
    def flat_hi(self) -> np.ndarray:
        return self.plans[0].hi

    @property
    def coupling(self) -> Coupling | None:
        return self.plans[0].coupling

    @property
    def alias(self) -> dict[int, int]:
        return dict(self.plans[0].alias)

    def nets(self) -> dict[str, Network]:
        out: dict[str, Network] = {}
        for inst in self.insts:
            out[inst.ns] = inst.net
            for t, hn in inst.hidden:
                out[inst.hidden_ns(t)] = hn
        return out

    def box_of(self, inst: Instance) -> tuple[np.ndarray, np.ndarray]:
        idx = _flat_of(inst)
        return self.flat_lo[idx], self.flat_hi[idx]

    # ---- protocol (encoders.properties.Property) ---------------------------------------------------
    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self.nets())

    def region(self) -> tuple[np.ndarray, np.ndarray]:
        """The input box of the first instance (every instance's box: :meth:`box_of`)."""
        return self.box_of(self.insts[0])

    def _inst_of(self, ns: str) -> Instance:
        return next(i for i in self.insts if i.ns == ns.split("#", 1)[0])

    def contains(self, xs: Mapping[str, np.ndarray]) -> bool:
        """Exact membership: every name space's input in its instance's box, and shared inputs equal
        (couplings and every other atom are checked exactly by :meth:`violated`)."""
        flat = np.zeros(self.query.n_vars)
        for ns, x in xs.items():
            inst = self._inst_of(ns)
            lo, hi = self.box_of(inst)
            x = np.asarray(x, dtype=np.float64).reshape(-1)
            if x.shape != lo.shape or np.any(x < lo) or np.any(x > hi):
                return False
            flat[_flat_of(inst)] = x
        return all(flat[w] == flat[u] for w, u in self.alias.items())

    def evaluated_point(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The float32 inputs onnxruntime is fed: each rounded inwards into its box (:func:`f32_inward`)."""
        out = {}
        for ns, x in xs.items():
            lo, hi = self.box_of(self._inst_of(ns))
            out[ns] = f32_inward(x, lo, hi)
        return out

    def quick_check(self, nets: Mapping[str, Network]) -> bool:
        return False

    def encode(self, nets: Mapping[str, Network], options: Any = None) -> Program:
        method = getattr(options, "bounds", "crown") if options is not None else "crown"
        quadratic = bool(getattr(options, "quadratic", False)) if options is not None else False
        prog = Program()
        var: dict[int, int] = {}  # flat query variable -> program variable
        alias = self.alias
        layer_bounds: dict[tuple[str, bytes], tuple[list, list]] = {}
        encs: dict[str, Any] = {}
        for inst in self.insts:
            flat = _flat_of(inst)
            xs = []
            for k, v in enumerate(flat.tolist()):
                if v in alias:
                    xs.append(var[alias[v]])
                else:
                    var[v] = prog.add_var(f"{inst.ns}.x[{k}]", self.flat_lo[v], self.flat_hi[v])
                    xs.append(var[v])
            xs_a = np.asarray(xs, dtype=np.int64)
            lo, hi = self.box_of(inst)
            key = (inst.root, lo.tobytes() + hi.tobytes())
            if key not in layer_bounds:
                lb = (
                    crown_bounds(inst.net, lo, hi) if method == "crown" else interval_bounds(inst.net, lo, hi)
                )
                layer_bounds[key] = (list(lb.lower), list(lb.upper))
            lower, upper = layer_bounds[key]
            enc = encode_network(prog, inst.net, xs_a, lower, upper, inst.ns)
            encs[inst.ns] = (enc, lower, upper)
            for k, v in enumerate(inst.output.indices.tolist()):
                var[v] = int(enc.outputs[k])
            for t, hn in inst.hidden:
                hlb = crown_bounds(hn, lo, hi) if method == "crown" else interval_bounds(hn, lo, hi)
                henc = encode_network(prog, hn, xs_a, list(hlb.lower), list(hlb.upper), inst.hidden_ns(t))
                for k, v in enumerate(t.indices.tolist()):
                    var[v] = int(henc.outputs[k])
        cp = self.coupling
        if cp is not None:
            self._encode_coupling(prog, cp, encs, quadratic)
        alts: list[list[LinearRow]] = []
        for p in self.plans:
            rows = [self._row(a, var) for a in p.rest]
            if not rows:
                alts = []
                break
            alts.append(rows)
        if alts:
            prog.add_disjunction(alts)
        prog.meta.update(property="vnnlib2", source=self.query.path, terms=len(self.plans))
        return prog

    def _encode_coupling(self, prog: Program, cp: Coupling, encs: dict, quadratic: bool) -> None:
        from .properties import _add_twin_cuts

        ia = next(i for i in self.insts if i.ns == cp.a)
        ib = next(i for i in self.insts if i.ns == cp.b)
        xa, xb = prog.blocks[cp.a]["input"], prog.blocks[cp.b]["input"]
        if cp.norm == "inf":
            for i in range(xa.size):
                prog.add_row([xa[i], xb[i]], [1.0, -1.0], Sense.LE, cp.delta, Tag.PROPERTY, f"dx{i}<=")
                prog.add_row([xa[i], xb[i]], [1.0, -1.0], Sense.GE, -cp.delta, Tag.PROPERTY, f"dx{i}>=")
        else:
            d = prog.add_vars("d", np.full(xa.size, -cp.delta), np.full(xa.size, cp.delta))
            for i in range(xa.size):
                prog.add_row([d[i], xa[i], xb[i]], [1.0, -1.0, 1.0], Sense.EQ, 0.0, Tag.PROPERTY, f"d{i}")
            prog.blocks["coupling"] = {"d": d}
            if quadratic:
                prog.add_ball(d, np.zeros(d.size), cp.delta)
        lo_a, hi_a = self.box_of(ia)
        lo_b, hi_b = self.box_of(ib)
        if not (np.array_equal(lo_a, lo_b) and np.array_equal(hi_a, hi_b)) or (cp.a, cp.b) != ("a", "b"):
            return  # twin rows need one domain for both copies (and the a/b name spaces)
        _, lower, upper = encs[cp.a]
        tb = twin_bounds(ia.net, lo_a, hi_a, cp.delta, cp.norm, (lower, upper), (lower, upper))
        _add_twin_cuts(prog, ia.net, tb, lower, upper, 0, [])

    @staticmethod
    def _row(a: Atom, var: dict[int, int]) -> LinearRow:
        if a.quad:
            raise SpecError("internal: a non-linear atom reached the row encoder")
        idx = [var[v] for v in a.coefs]
        coef = [float(c) for c in a.coefs.values()]
        return Program.row(idx, coef, Sense.LE, a.rhs_up(), Tag.PROPERTY, f"line{a.line}")

    def project(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        flat = np.zeros(self.query.n_vars)
        for inst in self.insts:
            lo, hi = self.box_of(inst)
            x = np.clip(np.asarray(xs[inst.ns], dtype=np.float64), lo, hi)
            flat[_flat_of(inst)] = x
        for v, u in self.alias.items():
            flat[v] = flat[u]
        cp = self.coupling
        if cp is not None and cp.norm == "inf":
            ia = next(i for i in self.insts if i.ns == cp.a)
            ib = next(i for i in self.insts if i.ns == cp.b)
            a, b = flat[_flat_of(ia)], flat[_flat_of(ib)]
            r = cp.delta - 4.0 * np.finfo(np.float64).eps * (np.abs(a) + cp.delta)
            flat[_flat_of(ib)] = a + np.clip(b - a, -r, r)
        for inst in self.insts:
            lo, hi = self.box_of(inst)
            x = f32_inward(flat[_flat_of(inst)], lo, hi)
            out[inst.ns] = x
            for t, _ in inst.hidden:
                out[inst.hidden_ns(t)] = x
        return out

    def assignment(self, xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray]) -> np.ndarray:
        """The flat assignment of the query's variables from inputs and evaluated outputs/hidden values."""
        flat = np.zeros(self.query.n_vars)
        for inst in self.insts:
            flat[_flat_of(inst)] = np.asarray(xs[inst.ns], dtype=np.float64).reshape(-1)
            flat[inst.output.indices] = np.asarray(ys[inst.ns], dtype=np.float64).reshape(-1)
            for t, _ in inst.hidden:
                flat[t.indices] = np.asarray(ys[inst.hidden_ns(t)], dtype=np.float64).reshape(-1)
        return flat

    def violated(self, xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray]) -> bool:
        try:
            flat = self.assignment(xs, ys)
        except (KeyError, ValueError):
            return False
        if not np.all(np.isfinite(flat)):
            return False
        for p in self.plans:
            if all(a.holds(flat) for a in p.term):
                self.witness.append(flat)
                return True
        return False

    # ---- cheap falsification --------------------------------------------------------------------
    def _evaluate(self, xs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The flat assignment computed by the float64 IR (inputs as given)."""
        ys: dict[str, np.ndarray] = {}
        for inst in self.insts:
            ys[inst.ns] = inst.net.evaluate(xs[inst.ns])
            for t, hn in inst.hidden:
                ys[inst.hidden_ns(t)] = hn.evaluate(xs[inst.ns])
        return self.assignment(xs, ys)

    def score(self, flat: np.ndarray) -> tuple[float, Atom | None]:
        """``max_t min_{a ∈ t} (b_a − lhs_a)`` over the group's terms (``>= 0`` iff some term holds, up to
        strictness) and the atom that attains it."""
        best, arg = -np.inf, None
        for p in self.plans:
            worst, wa = np.inf, None
            for a in p.rest:
                v = float(a.rhs) - a.value(flat)
                if v < worst:
                    worst, wa = v, a
            if worst > best:
                best, arg = worst, wa
        return best, arg

    def search(self, restarts: int = 8, steps: int = 60, seed: int = 0) -> list[dict[str, np.ndarray]]:
        """Candidates from projected sign-gradient ascent on :meth:`score` through the IR (each network's
        linear region at the current point), from the box centres and random points; the caller replays
        them (a candidate proves nothing by itself)."""
        rng = np.random.default_rng(seed)
        lo_in = {i.ns: self.box_of(i)[0] for i in self.insts}
        hi_in = {i.ns: self.box_of(i)[1] for i in self.insts}
        starts = [{ns: 0.5 * (lo_in[ns] + hi_in[ns]) for ns in lo_in}]
        starts += [{ns: rng.uniform(lo_in[ns], hi_in[ns]) for ns in lo_in} for _ in range(restarts - 1)]
        found: list[dict[str, np.ndarray]] = []
        for x0 in starts:
            xs = self.project(x0)
            step = 0.25
            sc, atom = self.score(self._evaluate(xs))
            for _ in range(steps):
                if sc >= 0 or atom is None:
                    break
                g = self._grad(xs, atom)
                cand = self.project(
                    {ns: xs[ns] + step * (hi_in[ns] - lo_in[ns]) * np.sign(g[ns]) for ns in g}
                )
                c_sc, c_atom = self.score(self._evaluate(cand))
                if c_sc > sc:
                    xs, sc, atom, step = cand, c_sc, c_atom, min(1.5 * step, 0.5)
                else:
                    step *= 0.5
                    if step < 1e-7:
                        break
            if sc >= 0:
                found.append({k: v for k, v in xs.items() if "#" not in k})
        return found

    def _grad(self, xs: Mapping[str, np.ndarray], atom: Atom) -> dict[str, np.ndarray]:
        """Gradient of ``b − lhs(atom)`` with respect to every instance's input (aliases summed)."""
        g_flat = np.zeros(self.query.n_vars)
        for v, c in atom.coefs.items():
            g_flat[v] -= float(c)
        out = {inst.ns: g_flat[_flat_of(inst)].copy() for inst in self.insts}
        for inst in self.insts:
            go = g_flat[inst.output.indices]
            if np.any(go):
                out[inst.ns] += inst.net.input_gradient(xs[inst.ns], go)
            for t, hn in inst.hidden:
                gh = g_flat[t.indices]
                if np.any(gh):
                    out[inst.ns] += hn.input_gradient(xs[inst.ns], gh)
        alias = self.alias
        if alias:
            pos = {int(v): (inst.ns, k) for inst in self.insts for k, v in enumerate(_flat_of(inst))}
            for w, u in alias.items():
                (nw, kw), (nu, ku) = pos[w], pos[u]
                out[nu][ku] += out[nw][kw]
                out[nw][kw] = out[nu][ku]
        return out

    def refine(self, prog: Program, assignment: np.ndarray) -> list[LinearRow]:
        cp = self.coupling
        if cp is None or cp.norm != "2" or prog.balls or "coupling" not in prog.blocks:
            return []
        from . import relaxations as rx

        d = prog.blocks["coupling"]["d"]
        dv = np.asarray(assignment)[d]
        if np.linalg.norm(dv) <= cp.delta * (1 + 1e-9):
            return []
        u, rhs = rx.l2_tangent_cut(np.zeros(d.size), cp.delta, dv)
        return [Program.row(d, u, Sense.LE, rhs, Tag.PROPERTY, "l2cut")]


def ir_source(path: str | Path, workdir: str | Path) -> Path:
    """The file the IR is read from: ``path`` itself, or — when its input has a fixed leading dimension
    above 1 (``float[2,2] x``: no batch axis, which the importer would take for a batch) — a copy whose
    input gets a batch axis of 1 and is reshaped back to the original shape before the original graph.
    The computation is the same; sat witnesses are certified on the original file anyway
    (:func:`verifier.vnnlib2_query.certify_witness`)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name for t in g.initializer}
    ins = [i for i in g.input if i.name not in inits]
    if len(ins) != 1:
        return Path(path)
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in ins[0].type.tensor_type.shape.dim]
    if len(dims) < 2 or dims[0] <= 1 or any(d <= 0 for d in dims):
        return Path(path)
    inp = ins[0]
    new_in = helper.make_tensor_value_info(inp.name + "__batched", inp.type.tensor_type.elem_type, [1, *dims])
    shape = numpy_helper.from_array(np.array(dims, dtype=np.int64), inp.name + "__shape")
    node = helper.make_node("Reshape", [new_in.name, shape.name], [inp.name], name=inp.name + "__unbatch")
    g2 = helper.make_graph(
        [node, *g.node],
        g.name,
        [new_in],
        list(g.output),
        [shape, *g.initializer],
        value_info=list(g.value_info),
    )
    m2 = helper.make_model(g2, opset_imports=list(model.opset_import), producer_name="distillcert-batched")
    m2.ir_version = model.ir_version
    out = Path(workdir) / f"batched_{abs(hash(str(path))) % 10**12}.onnx"
    onnx.save(m2, str(out))
    return out


#: Declared element types a network *output* may have when that output is a constant (integers hold
#: their values exactly in the reals).
INTEGER_TYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"})


def load_ir(path: str | Path, workdir: str | Path, output: TensorVar | None = None) -> Network:
    """The IR of ``path`` (through :func:`ir_source`).

    A network whose output does not depend on its input's *values* (``Shape(x)``, constants) is the
    constant network ``y = 0·x + c`` (the importer builds it; should it refuse one, ``c`` is computed
    once by onnxruntime — any input gives the same output — and replays still run the file).  Only such
    a constant output may have an integer element type (``output.dtype``); a non-constant one is refused.
    """
    src = ir_source(path, workdir)
    try:
        net = load_onnx(src)
    except UnsupportedModelError as ex:
        if "does not depend on the input" not in str(ex) or output is None:
            raise
        from .network import network_from_layers, ort_evaluate

        probe = load_onnx_shape(src)
        c = np.asarray(ort_evaluate(src, np.zeros(probe), None), dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(c)):
            raise
        return network_from_layers([(np.zeros((c.size, probe)), c)], path=str(src), sha256="")
    constant = not np.any(net.affines[0].W)  # y = 0·x + c: the importer's constant network
    if output is not None and output.dtype in INTEGER_TYPES and not constant:
        raise SpecError(
            f"{path}: output {output.name} is declared {output.dtype}; integer outputs are "
            "supported only when they are constants"
        )
    return net


def load_onnx_shape(path: str | Path) -> int:
    """Number of input elements of an ONNX file with one input (dynamic dimensions as 1)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    (inp,) = [i for i in m.graph.input if i.name not in inits]
    return int(np.prod([d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]))


def make_instances(
    query: Query,
    files: Mapping[str, str | Path],
    workdir: str | Path | None = None,
    loaded: dict[str, Network] | None = None,
) -> list[Instance]:
    """One :class:`Instance` per declared network, reading each ONNX file once.

    ``files`` maps every network not marked ``equal-to`` to its ONNX file.  Raises
    :class:`SpecError` / :class:`~encoders.errors.ModelFormatError` for anything the encoders cannot take:
    several input or output tensors, size mismatches, missing hidden nodes.
    """
    workdir = workdir or tempfile.mkdtemp(prefix="distillcert-vnnlib-")
    loaded = {} if loaded is None else loaded
    insts: list[Instance] = []
    copies = [n for n in query.networks if n.equal_to]
    twin = len(query.networks) == 2 and len(copies) == 1
    for k, decl in enumerate(query.networks):
        if decl.isomorphic_to:
            raise SpecError(
                f"{query.path}: network {decl.name!r} is declared isomorphic-to "
                f"{decl.isomorphic_to!r}; isomorphic networks are not supported"
            )
        root = query.root(decl.name)
        path = str(files[root])
        if path not in loaded:
            loaded[path] = load_ir(path, workdir, decl.outputs[0] if decl.outputs else None)
        net = loaded[path]
        if len(decl.inputs) != 1 or len(decl.outputs) != 1:
            raise SpecError(
                f"{query.path}: network {decl.name!r} declares {len(decl.inputs)} input and "
                f"{len(decl.outputs)} output tensors; only one of each is supported"
            )
        t_in, t_out = decl.inputs[0], decl.outputs[0]
        if t_in.size != net.n_inputs or t_out.size != net.n_outputs:
            raise SpecError(
                f"{query.path}: network {decl.name!r} declares {t_in.name} {list(t_in.shape)} and "
                f"{t_out.name} {list(t_out.shape)} but {path} maps {net.n_inputs} inputs to "
                f"{net.n_outputs} outputs"
            )
        hidden = []
        for t in decl.hidden:
            if not t.onnx_name:
                raise SpecError(f"{query.path}: hidden tensor {t.name!r} names no ONNX node")
            hn = hidden_network(ir_source(path, workdir), t.onnx_name, t.shape, workdir)
            if hn.n_inputs != net.n_inputs or hn.n_outputs != t.size:
                raise SpecError(
                    f"{query.path}: hidden tensor {t.name} {list(t.shape)} has {t.size} elements "
                    f"but ONNX node {t.onnx_name!r} computes {hn.n_outputs}"
                )
            hidden.append((t, hn))
        ns = ("a", "b")[k] if twin else f"n{k}:{decl.name}"
        insts.append(Instance(decl, ns, net, root, tuple(hidden)))
    return insts
