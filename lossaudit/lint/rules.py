"""The lint rules: code, name, severity, summary, explanation, a wrong and a right example.

Codes and names are a public interface: never renumber or rename. This module imports nothing
heavy, so ``lossaudit rules`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: str
    summary: str
    explanation: str
    fix: str
    wrong: str
    right: str


RULES: tuple[Rule, ...] = (
    Rule(
        "FL001", "constant-alpha", "error",
        "alpha multiplies positives and negatives (or every class) alike, so it only rescales the loss",
        "Focal loss balances positives against negatives with alpha_t = alpha*y + (1 - alpha)*(1 - y). "
        "A scalar alpha that multiplies every element changes the loss scale (and the effective learning "
        "rate), not the balance. For a softmax loss with a scalar alpha this is a warning: balancing a "
        "softmax needs a per-class alpha vector indexed by the target class.",
        "weight positives by alpha and negatives by 1 - alpha (sigmoid), or pass a per-class alpha vector (softmax)",
        "loss = alpha * (1 - p_t) ** gamma * ce",
        "alpha_t = alpha * targets + (1 - alpha) * (1 - targets)\nloss = alpha_t * (1 - p_t) ** gamma * ce",
    ),
    Rule(
        "FL002", "alpha-inverted", "error",
        "negatives weighted by alpha or positives by 1 - alpha, alpha applied twice, or one side left unweighted",
        "With alpha = 0.25 the reference weights positives 0.25 and negatives 0.75 (the paper's setting). "
        "Swapping the sides, applying alpha twice (alpha**2) or weighting only one side changes the "
        "balance the hyper-parameters were tuned for.",
        "use alpha_t = alpha * y + (1 - alpha) * (1 - y), applied once",
        "alpha_t = alpha * (1 - targets) + (1 - alpha) * targets",
        "alpha_t = alpha * targets + (1 - alpha) * (1 - targets)",
    ),
    Rule(
        "FL003", "softmax-misuse", "error",
        "a softmax couples classes where per-class sigmoid is intended, or background (all-zero) rows contribute nothing",
        "A detection classifier is C independent binary problems: each class's loss depends on its own "
        "logit only, and a background anchor (an all-zero target row) is a negative for every class. A "
        "softmax makes classes compete and cannot express background, so background anchors add no loss.",
        "use sigmoid per class (binary_cross_entropy_with_logits), not softmax / cross_entropy",
        "p = torch.softmax(logits, dim=1)\nce = F.cross_entropy(logits, labels, reduction='none')",
        "p = torch.sigmoid(logits)\nce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')",
    ),
    Rule(
        "FL004", "modulating-factor", "error",
        "the factor is not (1 - p_t)^gamma: p instead of p_t, p_t^gamma, log-probabilities inside p_t, the wrong term on negatives",
        "The modulating factor must shrink the loss of well-classified examples: (1 - p_t)**gamma with "
        "p_t = p*y + (1 - p)*(1 - y) the probability of the true label. Using p for negatives, p_t**gamma, "
        "or building p_t from log-probabilities makes the factor grow where it should shrink.",
        "compute p_t = p * y + (1 - p) * (1 - y) from probabilities and use (1 - p_t) ** gamma",
        "loss = (1 - p) ** gamma * ce            # p, not p_t: negatives are not down-weighted",
        "p_t = p * targets + (1 - p) * (1 - targets)\nloss = (1 - p_t) ** gamma * ce",
    ),
    Rule(
        "FL005", "gamma-ignored", "error",
        "changing gamma does not change the loss",
        "The gamma argument does not reach the computation (a hard-coded exponent, a misspelt attribute, "
        "a shadowed name), so tuning it does nothing.",
        "use the gamma argument in the exponent",
        "self.gamma = gamma\n...\nloss = (1 - p_t) ** 2 * ce",
        "loss = (1 - p_t) ** self.gamma * ce",
    ),
    Rule(
        "FL006", "saturated-gradient", "error",
        "a clamp zeroes the gradient of confidently wrong examples (logits clamped like probabilities, hard probability clamps)",
        "Clamping logits to [eps, 1 - eps] as if they were probabilities, or clamping probabilities to a "
        "wide range like [0.05, 0.95], makes the gradient exactly zero for the examples the model gets "
        "most wrong — the ones focal loss exists to learn from.",
        "compute from logits with binary_cross_entropy_with_logits / logsigmoid; clamp probabilities only by a tiny eps (torch.finfo(dtype).eps)",
        "logits = logits.clamp(1e-4, 1 - 1e-4)",
        "ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')",
    ),
    Rule(
        "FL007", "non-finite", "error",
        "inf or NaN in loss or gradient for finite inputs, logits up to ±100 in float32",
        "log(sigmoid(x)) underflows to log(0) = -inf for large |x|; 0 * inf in the backward pass gives NaN. "
        "One such element poisons the whole batch.",
        "use the stable forms: F.logsigmoid, F.binary_cross_entropy_with_logits, F.log_softmax",
        "loss = -targets * torch.log(torch.sigmoid(x)) - (1 - targets) * torch.log(1 - torch.sigmoid(x))",
        "loss = F.binary_cross_entropy_with_logits(x, targets, reduction='none')",
    ),
    Rule(
        "FL008", "batch-coupled", "error",
        "one example's loss depends on the others beyond a normaliser (e.g. p_t taken from an already averaged loss)",
        "p_t = exp(-BCE) computed from a loss that was already reduced over the batch gives every element "
        "the same modulating factor, taken from the batch average: focal loss no longer focuses.",
        "compute the element-wise loss with reduction='none', derive p_t per element, reduce last",
        "ce = F.binary_cross_entropy_with_logits(x, y)          # reduced: a batch mean\np_t = torch.exp(-ce)",
        "ce = F.binary_cross_entropy_with_logits(x, y, reduction='none')\np_t = torch.exp(-ce)  # exact for hard labels",
    ),
    Rule(
        "FL009", "gradient-mismatch", "warning",
        "values match the reference but gradients do not (e.g. a detached modulating factor)",
        "The forward value is right but the backward pass differs from the reference: typically "
        "(1 - p_t).detach() or a factor computed under no_grad, which removes part of focal loss's gradient.",
        "let gradients flow through the modulating factor, as the reference does",
        "loss = (1 - p_t).detach() ** gamma * ce",
        "loss = (1 - p_t) ** gamma * ce",
    ),
    Rule(
        "FL010", "alpha-misindexed", "error",
        "per-class alpha taken by the wrong index (prediction instead of target), cast to an integer type, or broadcast wrongly",
        "A per-class alpha balances classes only when each example is weighted by the alpha of its true "
        "class. Indexing by the predicted class, casting alpha to long (all zeros), or broadcasting a (C,) "
        "vector over the batch axis weights the wrong examples.",
        "weight each row by alpha[target]: alpha = alpha.to(logits.dtype)[targets]",
        "at = self.alpha[logits.argmax(dim=1)]",
        "at = self.alpha.to(logits.dtype)[targets]",
    ),
    Rule(
        "FL011", "ignore-index", "error",
        "ignored targets change the loss or crash it",
        "Elements labelled with the ignore index must not contribute to the loss (nor to its normaliser, "
        "beyond a documented choice), and must not crash one_hot or gather.",
        "mask ignored rows before one_hot/gather and drop them from the sum",
        "onehot = F.one_hot(targets, C)        # crashes on -100",
        "keep = targets != ignore_index\nloss = loss_fn(logits[keep], targets[keep])",
    ),
    Rule(
        "FL012", "input-mutation", "error",
        "the caller's logits or targets are modified in place",
        "An in-place op on the inputs (sigmoid_, clamp_, targets[...] = ...) silently changes tensors the "
        "training loop still uses, and can break autograd.",
        "use out-of-place ops (torch.sigmoid(x), x.clamp(...), targets.clone())",
        "logits.sigmoid_()",
        "p = torch.sigmoid(logits)",
    ),
    Rule(
        "FL013", "stateful", "error",
        "repeated calls on the same input differ, or forward changes the module's own attributes",
        "A loss that keeps state across calls (a counter, a running normaliser) gives different values for "
        "the same batch and makes runs depend on call order.",
        "keep forward pure; hold real state (GHM's moving average) in an explicit object",
        "self.num_calls += 1\nreturn loss / self.num_calls",
        "return loss / num_positives",
    ),
    Rule(
        "FL014", "no-reference-match", "error",
        "the output matches no reference under any normalisation tested",
        "lossaudit computed the reference losses (torchvision sigmoid focal, softmax focal, CenterNet) under "
        "every normalisation it knows (none, sum, mean over elements, mean over rows, sum per positive) and "
        "none matched, and no more specific rule explains the difference.",
        "compare the formula with the reference in lossaudit.losses; check --kind, --inputs and --init",
        "loss = alpha_t * (1 - p_t) ** gamma * ce / math.log(2)",
        "loss = alpha_t * (1 - p_t) ** gamma * ce",
    ),
    Rule(
        "FL015", "crash", "error",
        "raises, hangs or exits on valid input (hard-coded .cuda(), shape assumptions, Python 2 names)",
        "The loss could not be computed on a valid batch: it raised, ran past the time limit, called "
        "sys.exit, or killed its process.",
        "make the loss device- and shape-agnostic: use logits.device, avoid fixed batch sizes and squeeze()",
        "targets = targets.cuda()",
        "targets = targets.to(logits.device)",
    ),
    Rule(
        "FL016", "probability-logit-confusion", "error",
        "a sigmoid or softmax applied to probabilities, or a logit formula fed probabilities",
        "The function applies sigmoid/softmax to values that already are probabilities (or a logits formula "
        "like binary_cross_entropy_with_logits to probabilities), so the loss sees squashed inputs in "
        "[0.5, 0.73] and barely changes with the prediction.",
        "decide whether the function takes logits or probabilities, and apply sigmoid/softmax exactly once",
        "p = torch.sigmoid(probs)",
        "p = probs.clamp(eps, 1 - eps)",
    ),
    Rule(
        "FL017", "low-precision", "warning",
        "float16 / bfloat16 inputs fail or deviate beyond a dtype-scaled tolerance",
        "Under mixed precision the loss receives float16 or bfloat16 logits. Fixed epsilons below the "
        "dtype's resolution (1e-8 underflows in float16) and probability-space logs fail there.",
        "work from logits with the stable functions, or use torch.finfo(x.dtype).eps for clamps",
        "p = torch.sigmoid(x).clamp(min=1e-8)",
        "eps = torch.finfo(x.dtype).eps\np = torch.sigmoid(x).clamp(eps, 1 - eps)",
    ),
    Rule(
        "FL018", "normalisation", "info",
        "states the normalisation found (e.g. mean over N·C elements rather than per positive anchor)",
        "Detectors normalise the summed focal loss by the number of positive anchors; a mean over all "
        "N·C elements makes the loss (and the gradient) shrink with the number of anchors and classes.",
        "divide the summed loss by max(number of positives, 1) for detection",
        "return loss.mean()",
        "return loss.sum() / max(num_positives, 1)",
    ),
    Rule(
        "FL019", "default-mismatch", "info",
        "constructor defaults differ from the chosen reference (alpha, gamma, reduction)",
        "Defaults differ between libraries (alpha 0.25 in torchvision, -1 in fvcore; gamma 2 in most, 1.5 "
        "in YOLOv5). A user who relies on the defaults gets a different loss than the paper's.",
        "state alpha and gamma explicitly, or align the defaults with the reference (alpha=0.25, gamma=2)",
        "def __init__(self, alpha=1.0, gamma=1.5): ...",
        "def __init__(self, alpha=0.25, gamma=2.0): ...",
    ),
)

RULES_BY_CODE = {rule.code: rule for rule in RULES}


def parse_codes(text: str | None, option: str) -> frozenset[str]:
    """``"FL001,FL019"`` -> the codes; a prefix like ``FL01`` selects FL010..FL019."""
    if not text:
        return frozenset()
    from lossaudit.errors import InputError

    codes: set[str] = set()
    for item in (part.strip().upper() for part in text.split(",")):
        if not item:
            continue
        matched = {code for code in RULES_BY_CODE if code.startswith(item)}
        if not matched:
            raise InputError(f"{option}: unknown rule code {item}; `lossaudit rules` lists them")
        codes |= matched
    return frozenset(codes)
