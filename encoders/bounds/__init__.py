"""Every bound computation of distillcert, behind one package.

* :mod:`.crown` — interval (IBP) and CROWN bounds, batched, with prior bounds and L2 balls; margin bounds;
  the rounding tolerance every sound bound is widened by.
* :mod:`.alpha` — α-CROWN (optimised lower slopes), β-CROWN split bounds and the triangle-relaxation LP.
* :mod:`.twin` — twin-network difference bounds of two coupled copies (global two-copy queries).
* :mod:`.rounding` — the rounding constants every sound bound is widened by (``U``, ``ATOL``,
  ``rounding_tolerance``), float32 steps and the exact region checks replay uses.

The names of :mod:`.crown` are re-exported here, so ``from encoders.bounds import crown_bounds`` works.
"""

from .crown import *  # noqa: F403
from .crown import __all__ as _crown_all

__all__ = list(_crown_all)
