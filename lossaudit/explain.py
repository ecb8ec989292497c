"""``lossaudit explain``: one example worked through, step by step, as on a whiteboard.

Sigmoid (one logit x and a 0/1 target y of one class):

    p = sigmoid(x),  p_t = p y + (1 - p)(1 - y),  alpha_t = alpha y + (1 - alpha)(1 - y)
    CE = -log p_t,  factor = (1 - p_t)^gamma,  FL = alpha_t factor CE,  FL / CE = alpha_t factor
    dCE/dx = p - y,  dFL/dx = alpha_t (2y - 1)(1 - p_t)^gamma (gamma p_t log p_t + p_t - 1)
    g = |p - y| (GHM's gradient norm); with a dump, GHM-C's weight for g's bin in that data

Softmax (a row of logits and a target class k):

    q = softmax(x),  CE = -log q_k,  FL = (1 - q_k)^gamma CE
    a scalar alpha multiplies FL for every target class alike (it only rescales);
    a per-class alpha weights the row by alpha[k]

Pure Python maths (``math``), no torch: every value has the closed form above, and the tests check
the gradients against torch's autograd.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lossaudit.losses.cross_entropy import CE
from lossaudit.losses.focusing import FOCAL


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def sigmoid_steps(logit: float, target: int, alpha: float = 0.25, gamma: float = 2.0) -> dict:  # lossaudit: ignore -- a worked example of floats, not a loss
    """Every quantity of sigmoid focal loss for one element, with its formula.

    Args:
        logit: the element's logit x.
        target: 1 (a positive) or 0 (a negative).
        alpha: weight of positives in [0, 1] (negatives get 1 - alpha); -1 turns it off.
        gamma: the focusing parameter, at least 0.

    Example:
        >>> steps = sigmoid_steps(math.log(0.9 / 0.1), 1)
        >>> round(steps["ce"]["value"], 3), round(steps["focal"]["value"], 5)
        (0.105, 0.00026)
    """
    if target not in (0, 1):
        raise ValueError(f"target must be 0 or 1; got {target}")
    if not (0 <= alpha <= 1 or alpha == -1) or gamma < 0:
        raise ValueError(f"alpha must lie in [0, 1] (or -1, off) and gamma be at least 0; got alpha={alpha}, gamma={gamma}")
    p = _sigmoid(logit)
    p_t = p if target == 1 else 1 - p
    alpha_t = 1.0 if alpha == -1 else alpha if target == 1 else 1 - alpha
    ce = math.log1p(math.exp(-abs(logit))) + max(logit, 0) - logit * target  # stable -log p_t
    factor = (1 - p_t) ** gamma
    focal = alpha_t * factor * ce
    focal_gradient = alpha_t * (2 * target - 1) * (1 - p_t) ** gamma * (gamma * p_t * -ce + p_t - 1)
    return {
        "x": _step("x", "the logit", logit),
        "p": _step("p", "sigmoid(x)", p),
        "p_t": _step("p_t", "p y + (1 - p)(1 - y), the probability of the true label", p_t),
        "alpha_t": _step("alpha_t", "alpha y + (1 - alpha)(1 - y)" if alpha != -1 else "1 (alpha off)", alpha_t),
        "factor": _step("(1 - p_t)^gamma", f"the modulating factor, gamma = {gamma:g}", factor),
        CE: _step("CE", "-log p_t", ce),
        FOCAL: _step("FL", "alpha_t (1 - p_t)^gamma CE", focal),
        "ratio": _step("FL / CE", "alpha_t (1 - p_t)^gamma", alpha_t * factor),
        "ce_gradient": _step("dCE/dx", "p - y", p - target),
        "focal_gradient": _step("dFL/dx", "alpha_t (2y - 1)(1 - p_t)^gamma (gamma p_t log p_t + p_t - 1)", focal_gradient),
        "g": _step("g", "|p - y|, GHM's gradient norm", abs(p - target)),
    }


def softmax_steps(
    logits: Sequence[float], target: int, gamma: float = 2.0, alpha: float | None = None, alpha_per_class: Sequence[float] | None = None
) -> dict:  # lossaudit: ignore -- a worked example of floats, not a loss
    """Every quantity of softmax focal loss for one row, and what alpha does to it.

    Args:
        logits: the row's logits, one per class.
        target: the target class index k.
        gamma: the focusing parameter, at least 0.
        alpha: a scalar alpha (it multiplies every class alike: a rescaling).
        alpha_per_class: one alpha per class, taken at the target class (a balancing weight).

    Example:
        >>> steps = softmax_steps([2.0, 0.0, 0.0], 0, gamma=0)
        >>> round(steps["ce"]["value"], 4)  # log(1 + 2 e^-2)
        0.2395
    """
    if not 0 <= target < len(logits):
        raise ValueError(f"target must be a class index in [0, {len(logits)}); got {target}")
    if alpha_per_class is not None and len(alpha_per_class) != len(logits):
        raise ValueError(f"alpha_per_class has {len(alpha_per_class)} values for {len(logits)} classes")
    if gamma < 0:
        raise ValueError(f"gamma must be at least 0; got {gamma}")
    top = max(logits)
    log_sum = top + math.log(sum(math.exp(value - top) for value in logits))
    q = [math.exp(value - log_sum) for value in logits]
    ce = log_sum - logits[target]
    focal = (1 - q[target]) ** gamma * ce
    steps = {
        "q": _step("q", "softmax(x)", q),
        "q_k": _step("q_k", f"q of the target class {target}", q[target]),
        CE: _step("CE", "-log q_k", ce),
        FOCAL: _step("FL", f"(1 - q_k)^gamma CE, gamma = {gamma:g}", focal),
        "ratio": _step("FL / CE", "(1 - q_k)^gamma", (1 - q[target]) ** gamma),
    }
    if alpha is not None:
        steps["scalar_alpha"] = _step("alpha FL", f"alpha = {alpha:g} for every target class: the same factor on every row, a rescaling", alpha * focal)
    if alpha_per_class is not None:
        steps["per_class_alpha"] = _step(
            "alpha_k FL", f"alpha[{target}] = {alpha_per_class[target]:g}: rows of other classes get their own alpha", alpha_per_class[target] * focal
        )
    return steps


def _step(name: str, formula: str, value: float | list[float]) -> dict:
    return {"name": name, "formula": formula, "value": value}


def ghm_weight_in(report: dict, g: float) -> dict | None:
    """GHM-C's weight for an element of gradient norm ``g`` in the data of ``report`` (a compare
    report with ``per_difficulty`` binned like GHM-C): the bin's ``ghm_weight`` (None when the bin
    is empty in that data). From a weighted dump (a sample: the report's ``estimate``) the counts
    are estimates, and the formula says the weight is a plug-in estimate."""
    plug_in = "; a plug-in estimate: N and the count estimated from the weighted sample" if "estimate" in report else ""
    for row in report["per_difficulty"]:
        last = row is report["per_difficulty"][-1]
        if row["g_low"] <= g < row["g_high"] or last and g <= row["g_high"]:
            return _step("GHM weight", f"N / (count of g's bin [{row['g_low']:g}, {row['g_high']:g}) x non-empty bins) in the dump{plug_in}", row["ghm_weight"])
    return None


FORMULA_MIN = 24
"""The narrowest column a formula is wrapped in beside its quantity and value; on a narrower
terminal it goes on the lines below, indented."""


def render(steps: dict, title: str, width: int | None = None) -> str:
    """The steps as an aligned text table: quantity, value, formula; with ``width``, the title and
    the formulas wrapped to it (words never cut)."""
    from lossaudit.render.layout import wrap

    name_width = max(len(step["name"]) for step in steps.values())
    lines = [title] if width is None else wrap(title, width)
    for step in steps.values():
        value = step["value"]
        shown = ", ".join(f"{v:.4g}" for v in value) if isinstance(value, list) else "—" if value is None else f"{value:.6g}"
        prefix = f"  {step['name']:<{name_width}}  {shown:>12}  "
        if width is None:
            lines.append(prefix + step["formula"])
        elif width - len(prefix) >= FORMULA_MIN:
            lines += wrap(step["formula"], width, first=prefix, rest=" " * len(prefix))
        else:
            lines += [prefix.rstrip(), *wrap(step["formula"], width, first="      ", rest="      ")]
    return "\n".join(lines) + "\n"
