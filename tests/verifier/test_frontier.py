"""The frontier shared by the searches (``verifier.search.frontier``): a batched store of open sub-domains.

* :class:`Batch`: named fields of equal leading length; take / cat / empty keep the schema (and the
  subclass); mismatched fields are refused.
* :class:`Frontier`: push appends, pop removes the k lowest priorities (ascending with ``ordered``),
  the rows left keep their order; pop_at; clear; the memory accounting and the cap.
* The order is the one the searches had before they shared the frontier: a random sequence of pushes
  and pops (with ties) gives the same rows as the ReLU-split search's former pool (argsort, the rest in
  order, children appended) and the input-split search's former half-by-score / half-by-vmin pop.
"""

from __future__ import annotations

import numpy as np
import pytest

from verifier.search.frontier import Batch, Frontier, lowest


def _batch(p, tag=None) -> Batch:
    p = np.asarray(p, dtype=np.float64)
    tag = np.arange(p.size) if tag is None else np.asarray(tag)
    return Batch({"p": p, "tag": tag, "box": np.stack([p, -p], axis=1), "flag": (p > 0).astype(np.int8)})


class _Sub(Batch):
    __slots__ = ()

    @property
    def p(self) -> np.ndarray:
        return self["p"]


# --------------------------------------------------------------------------------------------------
# Batch
# --------------------------------------------------------------------------------------------------
def test_batch_fields_must_share_leading_length() -> None:
    with pytest.raises(ValueError, match="leading length"):
        Batch({"a": np.zeros(3), "b": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="leading length"):
        Batch({"a": np.float64(1.0)})
    with pytest.raises(ValueError, match="at least one field"):
        Batch({})


def test_take_and_cat_keep_order_schema_and_subclass() -> None:
    b = _Sub(_batch([5.0, -1.0, 2.0, 7.0]).fields)
    t = b.take(np.array([3, 0]))
    assert isinstance(t, _Sub)
    assert t.p.tolist() == [7.0, 5.0] and t["tag"].tolist() == [3, 0]
    assert t["box"].shape == (2, 2) and t["box"][0].tolist() == [7.0, -7.0]
    m = b.take(b.p > 0)  # a boolean mask
    assert m["tag"].tolist() == [0, 2, 3]
    c = _Sub.cat([t, m])
    assert isinstance(c, _Sub) and c["tag"].tolist() == [3, 0, 0, 2, 3]
    assert c["flag"].dtype == np.int8
    with pytest.raises(ValueError, match="fields differ"):
        Batch.cat([b, Batch({"p": np.zeros(1)})])


def test_empty_batch_keeps_trailing_shapes_and_dtypes() -> None:
    e = _batch([1.0, 2.0]).empty_like()
    assert len(e) == 0
    assert e["box"].shape == (0, 2) and e["flag"].dtype == np.int8 and e["tag"].dtype == np.int64
    assert e.nbytes == 0
    assert e.row_nbytes == 8 + 8 + 16 + 1


def test_arrays_are_shared_so_in_place_updates_stick() -> None:
    b = _batch([1.0, 2.0, 3.0])
    b["p"][1] = -4.0
    assert b["p"].tolist() == [1.0, -4.0, 3.0]


# --------------------------------------------------------------------------------------------------
# Frontier
# --------------------------------------------------------------------------------------------------
def test_pop_takes_lowest_priority_first_in_ascending_order() -> None:
    f: Frontier[Batch] = Frontier(_batch([0.0]).empty_like())
    f.push(_batch([3.0, 1.0, 4.0, 1.5, 9.0, 2.0]))
    out = f.pop(3, "p")
    assert out["p"].tolist() == [1.0, 1.5, 2.0]
    assert f.rows["p"].tolist() == [3.0, 4.0, 9.0]  # the rest keeps its order
    f.push(_batch([0.5, 8.0], tag=[10, 11]))
    assert f.rows["tag"].tolist() == [0, 2, 4, 10, 11]  # pushed rows go after the open ones
    out = f.pop(2, -f.rows["p"])  # an explicit priority array: the highest p first
    assert out["p"].tolist() == [9.0, 8.0]
    assert len(f) == 3 and f.pop(10, "p")["p"].tolist() == [0.5, 3.0, 4.0]
    assert len(f) == 0


def test_unordered_pop_selects_the_same_set_and_everything_when_k_is_large() -> None:
    rng = np.random.default_rng(0)
    p = rng.permutation(50).astype(float)
    f: Frontier[Batch] = Frontier(_batch(p))  # a non-empty batch fixes the schema only
    assert len(f) == 0
    f.push(_batch(p))
    out = f.pop(7, "p", ordered=False)
    assert sorted(out["p"].tolist()) == list(range(7))
    assert sorted(f.rows["p"].tolist()) == list(range(7, 50))
    all_rows = f.pop(100, "p", ordered=False)
    assert all_rows["tag"].tolist() == sorted(all_rows["tag"].tolist())  # store order
    assert len(f) == 0


def test_pop_at_returns_rows_in_index_order() -> None:
    f: Frontier[Batch] = Frontier(_batch([0.0]))
    f.push(_batch([10.0, 11.0, 12.0, 13.0]))
    out = f.pop_at(np.array([2, 0]))
    assert out["p"].tolist() == [12.0, 10.0]
    assert f.rows["p"].tolist() == [11.0, 13.0]
    with pytest.raises(ValueError, match="priority"):
        f.pop(1, np.zeros(5))


def test_lowest() -> None:
    p = np.array([4.0, 1.0, 3.0, 1.0, 0.0])
    assert lowest(p, 3).tolist() == np.argsort(p)[:3].tolist()
    assert sorted(p[lowest(p, 3, ordered=False)].tolist()) == [0.0, 1.0, 1.0]
    assert lowest(p, 9, ordered=False).tolist() == [0, 1, 2, 3, 4]
    assert lowest(p, 0).size == 0 and lowest(p, 0, ordered=False).size == 0


def test_empty_frontier() -> None:
    f: Frontier[Batch] = Frontier(_batch([1.0]))
    assert len(f) == 0 and f.nbytes == 0 and not f.over_cap
    out = f.pop(4, "p")
    assert len(out) == 0 and out["box"].shape == (0, 2)
    f.push(_batch([]))  # pushing nothing is fine
    assert len(f) == 0
    f.push(_batch([2.0, 3.0]))
    f.clear()
    assert len(f) == 0 and f.rows["box"].shape == (0, 2)


def test_memory_accounting_and_cap() -> None:
    f: Frontier[Batch] = Frontier(_batch([1.0]), max_rows=4)
    per_row = 8 + 8 + 16 + 1  # p float64, tag int64, box 2×float64, flag int8
    assert f.row_nbytes == per_row
    f.push(_batch([1.0, 2.0, 3.0]))
    assert f.nbytes == 3 * per_row and not f.over_cap
    f.push(_batch([4.0]))
    assert not f.over_cap  # at the cap, not over it
    f.push(_batch([5.0]))
    assert f.over_cap and f.peak == 5
    f.pop(2, "p")
    assert not f.over_cap and f.peak == 5
    g: Frontier[Batch] = Frontier(_batch([1.0]), max_bytes=2.5 * per_row)
    g.push(_batch([1.0, 2.0]))
    assert not g.over_cap
    g.push(_batch([3.0]))
    assert g.over_cap


# --------------------------------------------------------------------------------------------------
# the searches' former orders
# --------------------------------------------------------------------------------------------------
def test_same_order_as_the_former_relu_split_pool() -> None:
    """Former pool: ``take = argsort(lb)[:k]``; next pool = ``pool[setdiff(arange, take)]`` + children."""
    rng = np.random.default_rng(3)
    pool = np.zeros(0)
    ids = np.zeros(0, dtype=np.int64)
    f: Frontier[Batch] = Frontier(Batch({"lb": np.zeros(0), "id": np.zeros(0, dtype=np.int64)}))
    nxt = 0
    for _ in range(60):
        kids = rng.integers(0, 6, size=int(rng.integers(0, 9))).astype(float)  # many ties
        kid_ids = np.arange(nxt, nxt + kids.size)
        nxt += kids.size
        pool, ids = np.concatenate([pool, kids]), np.concatenate([ids, kid_ids])
        f.push(Batch({"lb": kids, "id": kid_ids}))
        k = int(rng.integers(1, 6))
        take = np.argsort(pool)[:k]
        rest = np.setdiff1d(np.arange(pool.size), take)
        got = f.pop(k, "lb")
        assert got["id"].tolist() == ids[take].tolist()
        pool, ids = pool[rest], ids[rest]
        assert f.rows["id"].tolist() == ids.tolist()


def test_same_order_as_the_former_input_split_pop() -> None:
    """Former pop: all when ``m ≥ N``; else half by argpartition of score, half by argpartition of
    vmin among the rest; the rest keeps its order.  Checked on the input-split search's own pop."""
    from encoders.network import network_from_layers
    from encoders.properties import OutputDNFProperty
    from verifier.search import input_split as isp

    net = network_from_layers([(np.ones((3, 2)), np.zeros(3)), (np.ones((1, 3)), np.zeros(1))])
    prop = OutputDNFProperty(np.zeros(2), np.ones(2), ((np.ones((1, 1)), np.zeros(1)),))
    search = isp._Search(prop, net, isp._spec_output(prop, net), isp.BabConfig(), 1e18)
    rng = np.random.default_rng(4)
    for _ in range(40):
        N = int(rng.integers(1, 40))
        score = rng.integers(0, 5, N).astype(float)
        vmin = rng.integers(0, 5, N).astype(float)
        m = int(rng.integers(1, 50))
        if m >= N:
            ref = np.arange(N)
        else:
            half = m // 2
            by_score = np.argpartition(score, half)[:half]
            rest = np.ones(N, dtype=bool)
            rest[by_score] = False
            cand = np.flatnonzero(rest)
            k = m - half
            by_v = cand[np.argpartition(vmin[cand], k)[:k]] if k < cand.size else cand
            ref = np.concatenate([by_score, by_v])
        lo = np.stack([np.arange(N, dtype=float), np.zeros(N)], axis=1)  # lo[:, 0] names the node
        nodes = isp._Nodes(
            lo,
            lo + 1.0,
            np.ones((N, 1), dtype=bool),
            score,
            np.zeros((N, 2)),
            vmin,
            np.zeros((N, 3), np.float32),
            np.zeros((N, 3), np.float32),
            np.zeros((N, 1), np.float32),
        )
        search.open.clear()
        search.open.push(nodes)
        got = search.pop(m)
        assert got.lo[:, 0].astype(int).tolist() == ref.tolist()
        keep = np.ones(N, dtype=bool)
        keep[ref] = False
        assert search.open.rows.lo[:, 0].astype(int).tolist() == np.flatnonzero(keep).tolist()
