"""The lint rules: code, name, severity, summary, explanation, a wrong and a right example.

Codes and names are a public interface: never renumber or rename. This module imports nothing
heavy, so ``lossaudit rules`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("error", "warning", "info")


KINDS = ("sigmoid", "softmax", "binary", "centernet", "qfl", "vfl", "asl", "ls-ce", "ghm")
"""The kinds of loss lint audits: the focal kinds, then the families of issue 15 (quality focal,
Varifocal, asymmetric, label-smoothing cross-entropy) and GHM-C."""
FAMILY_BASES = {"qfl": "sigmoid", "vfl": "sigmoid", "asl": "sigmoid", "ls-ce": "softmax", "ghm": "sigmoid"}
"""The family kinds and the focal kind whose batches, layouts and probes each shares: QFL,
Varifocal and ASL are per-class sigmoid losses on ``(N, C)`` targets (soft IoU qualities for QFL
and VFL, multi-hot labels for ASL); label-smoothing CE is a softmax loss on class indices. A rule
without a fix for a family kind gives the fix for its base kind."""

NO_ALPHA = (
    ("qfl", "QFL takes no balancing weight: remove it (|y - p|**beta already weights each element)"),
    ("asl", "ASL takes no balancing weight: remove it (gamma_pos, gamma_neg and clip balance the two sides)"),
    ("ls-ce", "label-smoothing cross-entropy takes no balancing weight: pass class weights as weight= to F.cross_entropy"),
    ("ghm", "GHM-C takes no balancing weight: its gradient-density weights do the balancing"),
)
"""The fix of an alpha rule for the families without alpha."""
VFL_ALPHA = ("vfl", "apply alpha once and to the negatives only: weight = q on positives, alpha * p**gamma on negatives")


@dataclass(frozen=True)
class Rule:
    """A lint rule. ``fix`` is the general advice; ``fixes`` overrides it for the kinds of loss
    (:data:`KINDS`) whose reference calls for a different one."""

    code: str
    name: str
    severity: str
    summary: str
    explanation: str
    fix: str
    wrong: str
    right: str
    fixes: tuple[tuple[str, str], ...] = ()

    def fix_for(self, kind: str | None) -> str:
        """The fix that fits a loss of ``kind``: its own, else its base kind's
        (:data:`FAMILY_BASES`), else the general one."""
        fixes = dict(self.fixes)
        return fixes.get(kind) or fixes.get(FAMILY_BASES.get(kind)) or self.fix


RULES: tuple[Rule, ...] = (
    Rule(
        "FL001", "constant-alpha", "error",
        "alpha multiplies positives and negatives (or every class) alike, so it only rescales the loss",
        "Focal loss balances positives against negatives with alpha_t = alpha*y + (1 - alpha)*(1 - y). "
        "A scalar alpha that multiplies every element changes the loss scale (and the effective learning "
        "rate), not the balance. A softmax loss with a scalar alpha (mmcv's softmax_focal_loss convention) "
        "gets this as info: balancing a softmax needs a per-class alpha vector indexed by the target class.",
        "weight positives by alpha and negatives by 1 - alpha: alpha_t = alpha * y + (1 - alpha) * (1 - y)",
        "loss = alpha * (1 - p_t) ** gamma * ce",
        "alpha_t = alpha * targets + (1 - alpha) * (1 - targets)\nloss = alpha_t * (1 - p_t) ** gamma * ce",
        fixes=(("softmax", "pass a per-class alpha vector and weight each row by alpha[target], or drop alpha"), ("centernet", "CenterNet's heatmap loss takes no balancing weight: remove it (peaks are weighted by (1 - p)^2, the rest by p^2 (1 - gt)^4)"), *NO_ALPHA, VFL_ALPHA),
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
        fixes=(("softmax", "weight each row once by alpha[target] of a per-class alpha vector"), ("centernet", "CenterNet's heatmap loss takes no balancing weight: remove it (peaks are weighted by (1 - p)^2, the rest by p^2 (1 - gt)^4)"), *NO_ALPHA, VFL_ALPHA),
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
        fixes=(("softmax", "keep the softmax for single-label classification only (--kind softmax): every row needs one target class"), ("binary", "compute each element's loss from its own logit: binary_cross_entropy_with_logits"), ("centernet", "compute each heatmap element's loss from its own probability")),
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
        fixes=(("softmax", "take q_y = softmax(logits)[target] (a probability, not a log-probability) and use (1 - q_y) ** gamma"), ("centernet", "use -log(p) (1 - p)^2 at peaks (gt == 1) and -log(1 - p) p^2 (1 - gt)^4 elsewhere"),
               ("qfl", "weight BCE(logits, y) by |y - p| ** beta, y the IoU quality at the positive's class column and 0 elsewhere, p = sigmoid(logits)"),
               ("vfl", "take BCE(logits, q) against the quality q and weight positives by q, negatives by alpha * p ** gamma"),
               ("asl", "weight positives by (1 - p) ** gamma_pos and negatives by p_m ** gamma_neg with p_m = max(p - clip, 0): the shift lowers the negatives' probability and leaves the positives alone"),
               ("ls-ce", "label-smoothing cross-entropy has no modulating factor: use F.cross_entropy(logits, target, label_smoothing=epsilon)"),
               ("ghm", "weight each element by N_valid / (the count of its bin of g = |sigmoid(logits).detach() - y|), divided by the number of non-empty bins")),
    ),
    Rule(
        "FL005", "gamma-ignored", "error",
        "changing gamma does not change the loss",
        "The gamma argument does not reach the computation (a hard-coded exponent, a misspelt attribute, "
        "a shadowed name), so tuning it does nothing.",
        "use the gamma argument in the exponent",
        "self.gamma = gamma\n...\nloss = (1 - p_t) ** 2 * ce",
        "loss = (1 - p_t) ** self.gamma * ce",
        fixes=(("centernet", "CenterNet's exponents are fixed at 2 and 4; a gamma argument must reach the exponent it names"), ("qfl", "use the beta argument in the exponent: |y - p| ** beta"),
               ("asl", "use gamma_pos and gamma_neg in the exponents of the positives' and the negatives' weights"), ("ls-ce", "use the smoothing argument where the smoothed targets are built")),
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
        fixes=(("softmax", "compute from logits with log_softmax / cross_entropy; never clamp logits, and clamp probabilities only by torch.finfo(dtype).eps"), ("centernet", "clamp heatmap probabilities only to CenterNet's [1e-4, 1 - 1e-4]")),
    ),
    Rule(
        "FL007", "non-finite", "error",
        "inf or NaN in loss or gradient for finite inputs, logits up to ±100 in float32",
        "log(sigmoid(x)) underflows to log(0) = -inf for large |x|; 0 * inf in the backward pass gives NaN. "
        "One such element poisons the whole batch.",
        "use the stable forms: F.logsigmoid, F.binary_cross_entropy_with_logits",
        "loss = -targets * torch.log(torch.sigmoid(x)) - (1 - targets) * torch.log(1 - torch.sigmoid(x))",
        "loss = F.binary_cross_entropy_with_logits(x, targets, reduction='none')",
        fixes=(("softmax", "use F.log_softmax / F.cross_entropy instead of log(softmax(x))"), ("centernet", "clamp the probabilities to [1e-4, 1 - 1e-4] before taking logs, as CenterNet does")),
    ),
    Rule(
        "FL008", "batch-coupled", "error",
        "one example's loss depends on the others beyond a normaliser (e.g. p_t taken from an already averaged loss)",
        "p_t = exp(-BCE) computed from a loss that was already reduced over the batch gives every element "
        "the same modulating factor, taken from the batch average: focal loss no longer focuses.",
        "compute the element-wise loss with reduction='none', derive p_t per element, reduce last",
        "ce = F.binary_cross_entropy_with_logits(x, y)          # reduced: a batch mean\np_t = torch.exp(-ce)",
        "ce = F.binary_cross_entropy_with_logits(x, y, reduction='none')\np_t = torch.exp(-ce)  # exact for hard labels",
        fixes=(("softmax", "compute each row's loss with reduction='none', derive q_y per row, reduce last"), ("centernet", "compute each heatmap element's loss on its own, then sum and divide by the number of peaks")),
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
        fixes=(("sigmoid", "index a per-class alpha by class column: alpha_t = alpha[c] * y + (1 - alpha[c]) * (1 - y), with alpha cast to the logits' dtype"), ("binary", "use one scalar alpha for the positive term and 1 - alpha for the negative term"), ("centernet", "CenterNet's heatmap loss takes no per-class weights: remove them"),
               *NO_ALPHA, ("vfl", "Varifocal's alpha is one scalar for the negatives: alpha * p ** gamma")),
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
        "the same batch and makes runs depend on call order. Where the reference keeps state by design "
        "(--kind ghm with momentum: GHM-C's moving average of bin counts), two calls must instead follow the "
        "reference's state from call to call.",
        "keep forward pure; hold real state (GHM's moving average) in an explicit object",
        "self.num_calls += 1\nreturn loss / self.num_calls",
        "return loss / num_positives",
        fixes=(("ghm", "keep the moving average per instance, as mmdet's GHMC does: acc = momentum * acc + (1 - momentum) * count for the non-empty bins, starting at 0"),),
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
        fixes=(("binary", "decide whether the function takes logits or probabilities, and apply sigmoid exactly once"),
               ("centernet", "CenterNet's loss takes probabilities: apply sigmoid once, in the model, and clamp to [1e-4, 1 - 1e-4]")),
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
        fixes=(("softmax", "divide the summed row losses by the number of rows, as F.cross_entropy's mean does"), ("binary", "take the mean or the sum of the element losses"), ("centernet", "divide the summed loss by the number of peaks (gt == 1), at least 1"),
               ("asl", "sum the element losses, as timm's AsymmetricLossMultiLabel does"), ("ghm", "divide the weighted sum by the number of valid elements, as mmdet's GHMC does")),
    ),
    Rule(
        "FL019", "default-mismatch", "info",
        "constructor defaults differ from the chosen reference (alpha, gamma, reduction)",
        "Defaults differ between libraries (alpha 0.25 in torchvision, -1 in fvcore; gamma 2 in most, 1.5 "
        "in YOLOv5). A user who relies on the defaults gets a different loss than the paper's.",
        "state alpha and gamma explicitly, or align the defaults with torchvision's (alpha=0.25, gamma=2)",
        "def __init__(self, alpha=1.0, gamma=1.5): ...",
        "def __init__(self, alpha=0.25, gamma=2.0): ...",
        fixes=(("softmax", "state gamma explicitly (reference gamma=2) and pass alpha as a per-class vector or None"), ("centernet", "CenterNet's heatmap loss takes no alpha or gamma: its exponents are 2 and 4"),
               ("qfl", "state beta explicitly (GFL: beta=2)"), ("vfl", "state alpha and gamma explicitly (VarifocalNet: alpha=0.75, gamma=2)"),
               ("asl", "state gamma_pos, gamma_neg and clip explicitly (timm: 1, 4 and 0.05)"), ("ls-ce", "state the smoothing explicitly (PyTorch's default is 0, timm's 0.1)"),
               ("ghm", "state bins and momentum explicitly (mmdet: bins=10, momentum=0; the authors' detectors: 30 and 0.75)")),
    ),
    Rule(
        "FL020", "peer-convention", "info",
        "follows a library's documented convention that departs from the focal-loss paper (kornia/MONAI class-0 alpha, MONAI positives-only alpha)",
        "Some libraries document a convention that differs from the paper: kornia and MONAI weight softmax "
        "class 0 by 1 - alpha and every other class by alpha (class 0 is the background), and MONAI's "
        "per-class alpha on a sigmoid loss weights positives only. The target follows that library, so this "
        "is not a defect; the finding names the library and the difference.",
        "keep the convention knowingly, or pass a per-class alpha vector to balance classes as the paper does",
        "FL = -alpha_t (1 - q_y)^gamma log q_y, alpha_t = 1 - alpha if y == 0 else alpha   # class 0 is background",
        "FL = -alpha[y] (1 - q_y)^gamma log q_y   # a per-class alpha vector",
        fixes=(("softmax", "keep it if class 0 is your background; to balance classes as the paper does, pass a per-class alpha vector taken at the target class"), ("sigmoid", "keep it knowingly, or pass a scalar alpha for torchvision's alpha_t = alpha * y + (1 - alpha) * (1 - y)"),
               *NO_ALPHA, ("vfl", "keep it knowingly, or weight positives by q and negatives by alpha * p ** gamma as VarifocalNet does")),
    ),
    Rule(
        "FL021", "grad-mode-leak", "error",
        "calling the loss changes torch.is_grad_enabled() for the caller (e.g. a bare torch.set_grad_enabled(True) inside the loss)",
        "Grad mode is global to the thread. A loss that switches it with a bare torch.set_grad_enabled(...) "
        "call (timm's AsymmetricLoss did) leaves it switched for the caller: a validation loop run under "
        "torch.no_grad() starts building graphs and holding activations after the first loss call, or a "
        "training step runs on without gradients. Context managers restore the mode on exit.",
        "switch grad mode only with a context manager (with torch.no_grad(): / with torch.enable_grad():), which restores it, or detach the tensor instead",
        "torch.set_grad_enabled(False)\nnum_pos = targets.sum().clamp(min=1)\ntorch.set_grad_enabled(True)   # now on for the caller too, even under no_grad",
        "with torch.no_grad():\n    num_pos = targets.sum().clamp(min=1)   # the mode is restored on exit",
    ),
    Rule(
        "FL022", "ignored-non-finite", "error",
        "inf or NaN logits at ignored positions leak into the loss or into the gradient of the other positions",
        "Positions labelled with the ignore index carry whatever the network produced there (padding, "
        "void pixels), sometimes inf or NaN. Multiplying the loss by a 0/1 mask (loss * keep) does not drop "
        "them: inf * 0 and NaN * 0 are NaN, so one ignored position turns the whole loss and every "
        "gradient into NaN. Selecting the kept positions, or torch.where, does drop them.",
        "select the kept positions before reducing (loss[keep], or logits[keep] and targets[keep]) or use torch.where(keep, loss, 0); never multiply by the mask",
        "keep = (targets != ignore_index)\nloss = (loss * keep).sum() / keep.sum()   # NaN * 0 = NaN",
        "keep = targets != ignore_index\nloss = loss[keep].sum() / keep.sum()",
    ),
    Rule(
        "FL023", "weighted-p_t", "error",
        "with class weights the modulating factor becomes (1 - p_t**w)**gamma: p_t recovered as exp(-CE) after the weights were folded into CE",
        "exp(-CE) recovers p_t only from an unweighted CE. Once a class weight w is inside the CE "
        "(F.cross_entropy(..., weight=w), BCE's weight= or pos_weight=), exp(-CE) is p_t**w, so the "
        "modulating factor is (1 - p_t**w)**gamma: a class weighted above 1 is focused as if it were "
        "misclassified, one below 1 as if it were easy, and the weights no longer just multiply the loss "
        "(fastai's FocalLoss and many ports).",
        "take p_t from the unweighted loss (or from the probabilities), then multiply by the class weight once",
        "ce = F.cross_entropy(logits, target, weight=self.weight, reduction='none')\np_t = torch.exp(-ce)   # p_t ** weight[target]\nloss = (1 - p_t) ** gamma * ce",
        "ce = F.cross_entropy(logits, target, reduction='none')\np_t = torch.exp(-ce)\nloss = self.weight[target] * (1 - p_t) ** gamma * ce",
        fixes=(("sigmoid", "take p_t from the probabilities (p_t = p * y + (1 - p) * (1 - y)) or from the unweighted BCE, then multiply by the class weight once"),),
    ),
    Rule(
        "FL024", "double-weighting", "error",
        "a class weight reaches the loss twice: scaling one class's weight by k scales its loss by k**2",
        "A class weight passed to the loss (weight=, class_weight=, pos_weight=) is meant to multiply that "
        "class's loss once. Passing it into the CE/BCE and multiplying the result by it again, or adding a "
        "per-class alpha built from it on top of BCE's pos_weight, squares it: the classes it was tuned to "
        "balance are over-corrected.",
        "apply each class weight once: either inside the CE/BCE (weight=/pos_weight=) or as a multiplier afterwards, not both",
        "ce = F.cross_entropy(logits, target, weight=self.weight, reduction='none')\nloss = self.weight[target] * (1 - p_t) ** gamma * ce",
        "ce = F.cross_entropy(logits, target, reduction='none')\nloss = self.weight[target] * (1 - p_t) ** gamma * ce",
        fixes=(("sigmoid", "apply each class weight once: BCE's weight=/pos_weight= or a multiplier afterwards, not both"),),
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
