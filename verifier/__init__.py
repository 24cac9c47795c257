"""distillcert's public Python API.

>>> from verifier import load_network, verify, LocalRobustness, DispatchConfig
>>> net = load_network("net.onnx")                                  # doctest: +SKIP
>>> prop = LocalRobustness(x0, 0.01, label=3, norm="inf")            # doctest: +SKIP
>>> verify(net, prop, DispatchConfig(backend="auto", timeout=60))   # doctest: +SKIP
Result(verdict=<Verdict.VERIFIED: 'verified'>, ...)

Every name is resolved lazily on first use (PEP 562), so importing a submodule such as
``verifier.cli.main`` does not import torch or the solvers.

==========================  ===================================================================
name                        what it is
==========================  ===================================================================
``load_network``            ONNX file → the verifiable-network IR (:class:`encoders.network.Network`)
``verify``                  one property on one network (or a name → network mapping) → ``Result``
``verify_local``            local robustness at a point (L∞/L2)
``verify_global``           global two-copy κ-confidence robustness
``verify_vnnlib``           a VNN-LIB file on an ONNX file
``faithfulness``            FAITHUB / EMPLB / disagreement of a teacher and a student
``certify``                 Algorithm 1: the PAC certificate of a teacher
``check_certificate``       re-check a written certificate
``DispatchConfig``          solver choice, time limit and strategy of a query
``CertifyConfig``           every setting of the certifier
``Result`` / ``Verdict``    typed results (``Verdict.VERIFIED``, ``FALSIFIED``, ``UNKNOWN``, …)
``Counterexample``          a replayed witness (the input onnxruntime evaluated and its outputs)
property classes            ``LocalRobustness``, ``OutputDNFProperty``, ``GlobalRobustness``,
                            ``Disagreement``
==========================  ===================================================================
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> "module:attribute" (imported on first use)
_EXPORTS: dict[str, str] = {
    "load_network": "encoders.network:load_onnx",
    "verify": "verifier.queries:verify_property",
    "verify_local": "verifier.queries:verify_local",
    "verify_global": "verifier.queries:verify_global",
    "verify_vnnlib": "verifier.queries:verify_vnnlib",
    "faithfulness": "verifier.queries:faithfulness",
    "certify": "verifier.certify:certify",
    "check_certificate": "verifier.certify:check_certificate",
    "DispatchConfig": "verifier.dispatch:DispatchConfig",
    "CertifyConfig": "verifier.certify:CertifyConfig",
    "Result": "verifier.results:Result",
    "Verdict": "verifier.results:Verdict",
    "Counterexample": "verifier.results:Counterexample",
    "LocalRobustness": "encoders.properties:LocalRobustness",
    "OutputDNFProperty": "encoders.properties:OutputDNFProperty",
    "GlobalRobustness": "encoders.properties:GlobalRobustness",
    "Disagreement": "encoders.properties:Disagreement",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time the names load lazily
    from encoders.network import load_onnx as load_network  # noqa: F401
    from encoders.properties import (  # noqa: F401
        Disagreement,
        GlobalRobustness,
        LocalRobustness,
        OutputDNFProperty,
    )

    from .dispatch import DispatchConfig  # noqa: F401
    from .queries import faithfulness, verify_global, verify_local, verify_vnnlib  # noqa: F401
    from .queries import verify_property as verify  # noqa: F401
    from .results import Counterexample, Result, Verdict  # noqa: F401


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'verifier' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
