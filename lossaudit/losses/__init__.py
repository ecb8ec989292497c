"""Reference losses: the behaviour lossaudit compares data and user code against, one module per
family, and the registry of what ``compare`` and ``lint`` know (:mod:`lossaudit.losses.registry`).

Every function is pure (tensors in, tensor out, no hidden state) and takes logits unless its
docstring says otherwise. Notation used throughout:

- ``x`` logit, ``p = sigmoid(x)``, ``y`` target in {0, 1} or soft in [0, 1];
- ``p_t = p*y + (1 - p)*(1 - y)``, ``alpha_t = alpha*y + (1 - alpha)*(1 - y)``;
- ``q = softmax(x)`` over the class axis for the softmax losses.

The semantics follow ``shared/REFERENCES.md``; where the references disagree, each docstring
states the choice made and the parameter that selects the other convention. Importing this
package imports no torch: the functions import it when first called.
"""

from lossaudit.losses.asymmetric import asl
from lossaudit.losses.balanced import cb, class_balanced_weights, logit_adjusted_ce
from lossaudit.losses.common import REDUCTIONS
from lossaudit.losses.cross_entropy import bce, ce
from lossaudit.losses.density import (
    GHMState,
    ghm,
    ghm_bin_edges,
    ghm_bin_weights,
    gradient_norm_bins,
)
from lossaudit.losses.focusing import focal, softmax_focal, softmax_focal_terms
from lossaudit.losses.heatmap import CENTERNET_PROB_CLAMP, centernet
from lossaudit.losses.mining import ohem, ohem_row_selection
from lossaudit.losses.quality import dfl, qfl, vfl
from lossaudit.losses.registry import LOSS_IDS
from lossaudit.losses.smoothing import ls_ce, poly1

FAMILY_IDS = tuple(function.__name__.replace("_", "-") for function in (qfl, dfl, vfl, asl, cb, logit_adjusted_ce, poly1, ls_ce))
"""The reference functions of the focal-loss families beyond the original seven (function name
with ``-`` for ``_``)."""

__all__ = [
    "CENTERNET_PROB_CLAMP",
    "FAMILY_IDS",
    "GHMState",
    "LOSS_IDS",
    "REDUCTIONS",
    "class_balanced_weights",
    "ghm_bin_edges",
    "ghm_bin_weights",
    "gradient_norm_bins",
    "ohem_row_selection",
    "softmax_focal_terms",
    *(function.__name__ for function in (asl, bce, cb, ce, centernet, dfl, focal, ghm, logit_adjusted_ce, ls_ce, ohem, poly1, qfl, softmax_focal, vfl)),
]
