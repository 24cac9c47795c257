"""The searches of the dispatcher, as named strategies.

==================  =============================================================================
name                what it is
==================  =============================================================================
``"input_split"``   branch and bound over input boxes (:mod:`verifier.search.input_split`; few
                    inputs, e.g. ACAS Xu): CROWN bounds per box, bisection, PGD in the open boxes
``"relu_split"``    per-alternative α/β-CROWN branch and bound over ReLU phases and margin MILPs
                    (:mod:`verifier.search.relu_split`; single-network output properties, e.g. mnistfc)
==================  =============================================================================

Both keep their open sub-domains in one :class:`~verifier.search.frontier.Frontier` (a batched store
with pop-by-priority and a memory cap).  A search in :data:`SEARCHES` is a :class:`Search`:
``search(prop, nets, config, t0)`` answers the query (a :class:`~verifier.results.Result`), hands back
sub-queries for the dispatcher (``"input_split"``: :class:`~verifier.search.input_split.BabLeafQueries`,
the few boxes it left open) or passes (``None``).  ``config`` is the dispatcher's
:class:`~verifier.dispatch.DispatchConfig` (each search declares what it reads as a protocol:
:class:`~verifier.search.input_split.InputSplitSettings`,
:class:`~verifier.search.relu_split.ReluSplitSettings`); ``t0`` the query's start
(``time.perf_counter()``), against which ``config.timeout`` runs.

(:mod:`verifier.search.pair_split`, the teacher–student box search of FAITHUB, is not a dispatcher
stage and is called directly by :func:`verifier.queries.faithfulness`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from encoders.errors import ConfigError
from encoders.network import Network
from encoders.properties import Property

from ..results import Result
from .input_split import BabLeafQueries, InputSplitSettings, bab_stage
from .relu_split import ReluSplitSettings, relu_split_stage

__all__ = ["SEARCHES", "Search", "SearchSettings", "get_search"]


class SearchSettings(InputSplitSettings, ReluSplitSettings, Protocol):
    """Everything a search may read from the dispatcher's configuration
    (:class:`verifier.dispatch.DispatchConfig` conforms)."""


class Search(Protocol):
    """A named search: answer (Result), hand back leaf queries, or pass (None)."""

    def __call__(
        self, prop: Property, nets: Mapping[str, Network], config: SearchSettings, t0: float
    ) -> Result | BabLeafQueries | None: ...


#: name -> search (the dispatcher's stages look them up here)
SEARCHES: dict[str, Search] = {
    "input_split": bab_stage,
    "relu_split": relu_split_stage,
}


def get_search(name: str) -> Search:
    """The search registered as ``name`` (a key of :data:`SEARCHES`)."""
    try:
        return SEARCHES[name]
    except KeyError:
        raise ConfigError(f"unknown search {name!r} (choose from {', '.join(SEARCHES)})") from None
