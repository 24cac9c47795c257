r"""Stage 1, **sample**: the guarantee kind and its sample size, the seeded draw from the distribution
``D``, and the teacher's labels and confident set ``K = {i : conf_T(x_i) ≥ κ}`` (confidence is always the
**teacher's**, a fixed function, so every range the PAC arguments use is fixed before sampling).

``sampling = "empirical"``: i.i.d. with replacement from the training inputs (the guarantee is about their
empirical distribution).  ``sampling = "heldout"``: the first ``s`` points of a seeded permutation of the
test split (assumed an i.i.d. sample of the data distribution unseen by the teacher); ``s`` larger than
the split is a :class:`~encoders.errors.ConfigError`, never silently cut.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders import relaxations as rx
from encoders.errors import ConfigError

from . import pac
from .config import RADIUS_FACTOR, CertifyConfig

__all__ = [
    "Sample",
    "choose_kind",
    "draw",
    "draw_sample",
    "radius_rule",
    "sample_hash",
    "sample_pool",
    "softmax",
]

_KIND_PAC_NAME = {"seed": "seed_vc", "quality": "quality_space", "binomial": "binomial"}


# PAC sample size and sampling
# ==================================================================================================
def choose_kind(config: CertifyConfig, m: int) -> dict[str, Any]:
    """The guarantee kind, its minimum sample size, the sample size used and the VC dimension.

    ``auto`` picks the kind with the smallest minimum ``s`` (ties broken by the order seed, quality,
    binomial).  Returns ``{"kind", "s_required", "s", "d", "pac"}`` with ``pac`` =
    :func:`verifier.certify.pac.pac_summary` (text dropped).
    """
    summ = pac.pac_summary(m, config.norm, config.epsilon, config.eta, config.tv_shift)
    summ.pop("text", None)
    sizes = {k: int(summ[v]) for k, v in _KIND_PAC_NAME.items()}
    kind = config.guarantee if config.guarantee != "auto" else min(sizes, key=lambda k: sizes[k])
    need = sizes[kind]
    s = need if config.samples is None else int(config.samples)
    if s < need:
        raise ConfigError(
            f"--samples {s} is below the {need} samples the {kind} guarantee needs at "
            f"epsilon={config.epsilon:g}, eta={config.eta:g}"
        )
    d = {"seed": int(summ["d"]), "quality": pac.QUALITY_SPACE_VC, "binomial": None}[kind]  # no VC argument
    return {"kind": kind, "s_required": need, "s": s, "d": d, "pac": summ}


def radius_rule(config: CertifyConfig, kind: str) -> str:
    """``"fixed"`` for the binomial kind (its property is fixed before sampling), else the configured rule
    (``auto`` → ``"min"``)."""
    if kind == "binomial":
        return "fixed"
    return "min" if config.teacher_radius == "auto" else config.teacher_radius


def draw_sample(n_pool: int, s: int, seed: int, sampling: str) -> np.ndarray:
    """Indices of the ``s`` sampled points in a pool of ``n_pool`` (see the module docstring).

    ``empirical``: ``s`` i.i.d. uniform indices (with replacement) from ``numpy.random.default_rng(seed)``;
    ``heldout``: the first ``s`` entries of a seeded permutation (without replacement).
    """
    if n_pool <= 0:
        raise ConfigError("sampling: the pool of points is empty")
    rng = np.random.default_rng([int(seed), 6000])
    if sampling == "empirical":
        return rng.integers(0, n_pool, size=int(s), dtype=np.int64)
    if s > n_pool:
        raise ConfigError(
            f"--sampling heldout: {s} samples are needed but the held-out split has only {n_pool} points; "
            "raise epsilon/eta, or use --sampling empirical (the guarantee is then about the empirical "
            "distribution of the training inputs)"
        )
    return rng.permutation(n_pool)[: int(s)].astype(np.int64)


def sample_hash(X: np.ndarray, idx: np.ndarray) -> str:
    """SHA-256 of the sampled points (float64, C order) and their indices (int64)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(np.asarray(X, dtype=np.float64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(idx, dtype=np.int64)).tobytes())
    return h.hexdigest()


def sample_pool(data: Any, sampling: str) -> tuple[np.ndarray, str]:
    """The points sampled from: the training inputs (``empirical``) or the test split (``heldout``)."""
    if sampling == "heldout":
        return np.asarray(data.X_test, dtype=np.float64), "test"
    return np.asarray(data.X_train, dtype=np.float64), "train"


# ==================================================================================================
# numerics
# ==================================================================================================
softmax = rx.softmax  # row-wise float64 softmax, defined once in encoders.relaxations


@dataclass(frozen=True)
class Sample:
    """The drawn sample and the teacher's view of it.

    ``choice`` is :func:`choose_kind`'s record; ``rule`` the radius rule; ``R`` the base radius
    ``RADIUS_FACTOR[kind] · δ``; ``X = pool[idx]``; ``z_t``/``p_t`` the teacher's logits/probabilities,
    ``c_t`` its classes, ``conf_t`` its confidence and ``K`` the positions of the confident samples.
    """

    choice: dict[str, Any]
    rule: str
    R: float
    pool_name: str
    pool_size: int
    distribution: str
    idx: np.ndarray
    X: np.ndarray
    sha256: str
    z_t: np.ndarray
    p_t: np.ndarray
    c_t: np.ndarray
    conf_t: np.ndarray
    K: np.ndarray

    @property
    def kind(self) -> str:
        return str(self.choice["kind"])

    @property
    def s(self) -> int:
        return int(self.choice["s"])


def _distribution(config: CertifyConfig, data: Any, n_pool: int) -> str:
    if config.sampling == "empirical":
        return (
            f"the empirical distribution of the {n_pool} training inputs of {data.name} (uniform over "
            "them, sampled with replacement); not a statement about unseen data"
        )
    return (
        f"the data distribution of {data.name}, assuming its {n_pool}-point test split is an i.i.d. "
        "sample from it that the teacher never saw (sampled without replacement)"
    )


def draw(config: CertifyConfig, data: Any, teacher_logits: Any) -> Sample:
    """Choose the kind, draw the sample and label it; ``teacher_logits(X) -> (n, classes)`` float64 (the
    teacher as onnxruntime evaluates it)."""
    choice = choose_kind(config, int(data.n_features))
    kind = choice["kind"]
    pool, pool_name = sample_pool(data, config.sampling)
    idx = draw_sample(len(pool), choice["s"], config.seed, config.sampling)
    X = pool[idx]
    z_t = np.asarray(teacher_logits(X), dtype=np.float64)
    p_t = softmax(z_t)
    c_t = np.argmax(z_t, axis=1)
    conf_t = p_t[np.arange(len(X)), c_t]
    return Sample(
        choice=choice,
        rule=radius_rule(config, kind),
        R=RADIUS_FACTOR[kind] * config.delta,
        pool_name=pool_name,
        pool_size=int(len(pool)),
        distribution=_distribution(config, data, len(pool)),
        idx=idx,
        X=X,
        sha256=sample_hash(X, idx),
        z_t=z_t,
        p_t=p_t,
        c_t=c_t,
        conf_t=conf_t,
        K=np.flatnonzero(conf_t >= config.kappa),
    )
