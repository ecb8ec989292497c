"""Verify the wild corpus's fixtures by running them (issue 21): each correct fixture must match a
reference computed here in torch (torchvision's sigmoid focal loss, the softmax focal loss
-(1 - p_t)**gamma log p_t), and each stated defect must be observable — a wrong number, a crash,
an argument without effect — at the fixture's settings or at canonical ones.

    python benchmarks/lint_wild_verify.py [FOLDER]

One line per check (fixture, defect kind, evidence); exit 1 if any does not hold. This checks the
fixtures, not lint: lint's scores on them come from benchmarks/lint_wild.py.
"""

import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "wild"
RESULTS = []


def load(name):
    path = next(ROOT.rglob(f"{name}.py"))
    spec = importlib.util.spec_from_file_location(f"wild_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ref_sig(x, y, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    pt = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - pt) ** gamma
    if alpha is not None and alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def ref_soft(x, t, gamma=2.0, weight=None):
    logp = F.log_softmax(x, 1)
    lpt = logp.gather(1, t[:, None]).squeeze(1)
    loss = -((1 - lpt.exp()) ** gamma) * lpt
    return loss * weight[t] if weight is not None else loss


def grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    fn(x).backward()
    return x.grad


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def check(fixture, cid, ok, evidence):
    RESULTS.append((fixture, cid, bool(ok), evidence))
    print(f"{'OK ' if ok else 'FAIL'} {fixture:45s} {cid:16s} {evidence}")


def raises(fn):
    try:
        fn()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
    return None


@contextmanager
def cuda_as_cpu():
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


torch.manual_seed(0)
X = torch.randn(8, 5) * 2
T = torch.randint(0, 5, (8,))
T[:2] = torch.tensor([3, 4])
Y = F.one_hot(T, 5).float()
YB = (torch.rand(8, 5) < 0.35).float()
NEG = torch.tensor([[0.7]]), torch.tensor([[0.0]])
POS = torch.tensor([[0.7]]), torch.tensor([[1.0]])
SAT = torch.tensor([[100.0, -100.0, 0.0, 0.0, 0.0]])


def alpha_ratio(make, x, y):
    """loss(alpha=.25)/loss(alpha=.75) on one element; the reference gives 1/3 on a positive, 3 on a negative."""
    return float(make(0.25)(x, y) / make(0.75)(x, y))


def correct_checks():
    m = load("pytorch_vision_sigmoid_focal_loss")
    check(
        "pytorch_vision",
        "match",
        torch.allclose(m.sigmoid_focal_loss(X, YB), ref_sig(X, YB))
        and rel(grad(lambda x: m.sigmoid_focal_loss(x, YB).sum(), X), grad(lambda x: ref_sig(x, YB).sum(), X)) < 1e-5,
        "value+grad = reference",
    )
    m = load("adeelh_multi_class_focal_loss")
    loss = m.FocalLoss(gamma=2)
    x4 = torch.randn(2, 5, 3, 3)
    t4 = torch.randint(0, 5, (2, 3, 3))
    t4[0, 0, 0] = -100
    keep = t4.reshape(-1) != -100
    ref4 = ref_soft(x4.movedim(1, -1).reshape(-1, 5)[keep], t4.reshape(-1)[keep]).mean()
    check(
        "adeelh",
        "match",
        torch.allclose(loss(X, T), ref_soft(X, T).mean())
        and torch.allclose(loss(x4, t4), ref4)
        and rel(grad(lambda x: loss(x, T), X), grad(lambda x: ref_soft(x, T).mean(), X)) < 1e-5,
        "rows, maps with an ignored pixel, grad = reference",
    )
    m = load("coincheung_focal_loss_v2")
    loss = m.FocalLossV2()
    check(
        "coincheung",
        "match",
        torch.allclose(loss(X, YB), ref_sig(X, YB).mean()) and rel(grad(lambda x: loss(x, YB), X), grad(lambda x: ref_sig(x, YB).mean(), X)) < 1e-4,
        "value + hand-written grad = reference",
    )
    m = load("jamesmccullochdickens_csi5340_focal_loss")
    loss = m.FocalLoss()
    check(
        "jamesmcc",
        "match",
        torch.allclose(loss(X, T), ref_soft(X, T).mean()) and rel(grad(lambda x: loss(x, T), X), grad(lambda x: ref_soft(x, T).mean(), X)) < 1e-5,
        "value+grad = softmax reference",
    )
    m = load("vshmyhlo_research_sigmoid_focal_loss")
    check("vshmyhlo", "match", torch.allclose(m.sigmoid_focal_loss(X, YB), ref_sig(X, YB, alpha=None)), "elementwise = reference (no alpha)")
    m = load("openmmlab_mmdetection_py_sigmoid_focal_loss")
    f = m.py_sigmoid_focal_loss
    check(
        "mmdetection",
        "match",
        torch.allclose(f(X, Y), ref_sig(X, Y).mean())
        and torch.allclose(f(X, Y, avg_factor=3.0), ref_sig(X, Y).sum() / 3)
        and rel(grad(lambda x: f(x, Y), X), grad(lambda x: ref_sig(x, Y).mean(), X)) < 1e-5,
        "value (mean, avg_factor) + grad = reference",
    )
    m = load("nathanjpaek_kb_pilot_focal_loss")
    check("kb_pilot", "match", torch.allclose(m.FocalLoss()(X, YB), ref_sig(X, YB, None), atol=1e-6), "elementwise = reference")
    m = load("yuhebaii_project2_focal_loss")
    check(
        "yuhebaii",
        "match",
        torch.allclose(m.FocalLoss()(X, T), ref_soft(X, T).mean())
        and torch.allclose(m.FocalLoss(reduction="sum")(X, T), ref_soft(X, T).sum())
        and m.FocalLoss(reduction="none")(X, T).shape == T.shape,
        "mean/sum/none = reference",
    )
    m = load("detectionblwx_ssdetection_focal_loss")
    check(
        "ssdetection",
        "match",
        torch.allclose(m.pySigmoidFocalLoss(X, YB), ref_sig(X, YB).mean())
        and rel(grad(lambda x: m.pySigmoidFocalLoss(x, YB), X), grad(lambda x: ref_sig(x, YB).mean(), X)) < 1e-5,
        "value+grad = reference",
    )
    m = load("pablomessina_medvqa_focal_loss")
    check("medvqa", "match", torch.allclose(m.FocalLoss()(X, YB), ref_sig(X, YB).mean()), "= reference mean")
    m = load("facebookresearch_detr_sigmoid_focal_loss")
    check("detr", "match", torch.allclose(m.sigmoid_focal_loss(X, YB, 4), ref_sig(X, YB).mean(1).sum() / 4), "= reference, mean(1).sum()/num_boxes")
    m = load("kungfuai_d3m_binary_focal_loss")
    loss = m.BinaryFocalLoss()
    check(
        "kungfuai",
        "match",
        torch.allclose(loss(torch.sigmoid(X), YB), ref_sig(X, YB), atol=1e-5)
        and rel(grad(lambda x: loss(torch.sigmoid(x), YB).sum(), X), grad(lambda x: ref_sig(x, YB).sum(), X)) < 1e-3,
        "on probabilities = reference (value+grad through the sigmoid)",
    )


def detached_pt(name, make, target_kind="index"):
    loss = make()
    value_ok = torch.allclose(loss(X, T), ref_soft(X, T).mean() if target_kind == "index" else ref_soft(X, T).sum())
    reference = ref_soft(X, T).mean() if target_kind == "index" else ref_soft(X, T).sum()
    r = rel(grad(lambda x: loss(x, T), X), grad(lambda x: ref_soft(x, T).mean() if target_kind == "index" else ref_soft(x, T).sum(), X))
    check(name, "detached-pt", value_ok and r > 0.05, f"value = reference ({float(reference):.4f}); gradient off by {r:.0%} (max rel) at gamma=2")


def batch_coupled(name, fn):
    full = float(fn(X, T))
    reference = float(ref_soft(X, T).mean())
    single = all(torch.allclose(fn(X[i : i + 1], T[i : i + 1]), ref_soft(X[i : i + 1], T[i : i + 1]).mean()) for i in range(3))
    check(
        name,
        "batch-pt",
        abs(full - reference) > 1e-3 * reference and single,
        f"batch of 8: {full:.4f} vs reference {reference:.4f}; each single row = reference (p_t is a batch quantity)",
    )


def constant_alpha_softmax(name, make, x=X, t=T):
    ratios = (make(0.25)(x, t) / make(0.75)(x, t)).reshape(-1)
    check(
        name,
        "scalar-alpha",
        torch.allclose(ratios, torch.full_like(ratios, 1 / 3)),
        f"loss(alpha=.25)/loss(alpha=.75) = {float(ratios[0]):.4f} for every class (a rescaling)",
    )


def constant_alpha_sigmoid(name, make):
    r = alpha_ratio(make, *NEG)
    check(name, "constant-alpha", abs(r - 1 / 3) < 1e-4, f"on a negative loss(.25)/loss(.75) = {r:.4f} (reference 3.0)")


def inverted_alpha(name, make):
    x, y = POS
    w = float(make()(x, y) / ref_sig(x, y, None).sum())
    check(name, "alpha-inverted", abs(w - 0.75) < 1e-4, f"a positive is weighted {w:.4f} at alpha=0.25 (reference 0.25)")


def ignore_denominator(name, fn, ignore, ref_rows):
    t = T.clone()
    t[:4] = ignore
    keep = t != ignore
    value = float(fn(X, t))
    ref_valid = float(ref_rows(X[keep], t[keep]).mean())
    check(
        name,
        "ignore-denominator",
        abs(value - ref_valid * keep.float().mean()) < 1e-5 and abs(value - ref_valid) > 1e-3,
        f"half the rows ignored: {value:.4f} = {keep.float().mean():.2f} x mean over kept rows {ref_valid:.4f}",
    )


def buggy_checks_a():
    m = load("thangvubk_pesr_focal_loss")
    loss = m.FocalLoss(2)
    with torch.no_grad():
        value_ok = torch.allclose(loss(X, YB), ref_sig(X, YB, None).mean())
    err = raises(lambda: loss(X.clone().requires_grad_(True), YB))
    check("thangvubk", "weight-grad-crash", value_ok and err is not None, f"value = reference under no_grad; logits requiring grad: {err}")
    m = load("clcarwin_focal_loss")
    detached_pt("clcarwin", lambda: m.FocalLoss(gamma=2))
    check(
        "clcarwin",
        "alpha-table",
        raises(lambda: m.FocalLoss(gamma=2, alpha=0.25)(X, T)) is not None,
        f"alpha=0.25, labels up to 4: {raises(lambda: m.FocalLoss(gamma=2, alpha=0.25)(X, T))}",
    )
    m = load("apie0419_aic20_mtmc_focal_loss")
    err = raises(lambda: m.FocalLoss()(X, T))
    check("apie0419", "alpha-table-crash", err is not None, f"defaults, 5 classes: {err}")
    detached_pt("apie0419", lambda: m.FocalLoss(gamma=2, alpha=None))
    m = load("zumo09_text_segmentation_focal_loss")
    err = raises(lambda: m.FocalLoss(2, 0.25)(X, T))
    check("zumo09", "alpha-not-tensor", err is not None and raises(lambda: m.FocalLoss(2, [0.25] * 5)(X, T)) is not None, f"float or list alpha: {err}")
    detached_pt("zumo09", lambda: m.FocalLoss(2, torch.ones(5)), target_kind="sum")
    m = load("dtminnick_sweep_framework_focal_loss")
    batch_coupled("dtminnick", m.FocalLoss())
    m = load("seeooo_car_blackbox_focal_loss")
    batch_coupled("seeooo", m.FocalLoss())
    none_out = m.FocalLoss(reduction="none")(X, T)
    sum_out = float(m.FocalLoss(reduction="sum")(X, T))
    check(
        "seeooo",
        "reduction-ignored",
        none_out.dim() == 0 and abs(sum_out - float(ref_soft(X, T).sum())) > 0.1,
        f"reduction='none' gives shape {tuple(none_out.shape)}; 'sum' gives {sum_out:.4f} vs reference sum {float(ref_soft(X, T).sum()):.4f}",
    )
    m = load("nyoki_mtl_pytorch_segmentation_focal_loss")
    batch_coupled("nyoki", m.FocalLoss(alpha=None))
    constant_alpha_softmax("nyoki", lambda a: m.FocalLoss(alpha=a))
    m = load("boostcampaitech5_klue_focal_loss")
    batch_coupled("boostcamp", m.FocalLoss(alpha=1))
    constant_alpha_softmax("boostcamp", lambda a: m.FocalLoss(alpha=a))
    out = m.FocalLoss(reduce=False)(X, T)
    check("boostcamp", "reduce-ignored", out.dim() == 0, f"reduce=False returns shape {tuple(out.shape)} (per-example losses expected)")
    m = load("rs1004_object_detection_focal_loss")
    x2 = X.clone()
    off = (T + 1) % 5
    x2[torch.arange(8), off] += 8.0
    same = torch.allclose(m.focal_loss(X, T), m.focal_loss(x2, T))
    check("rs1004", "negatives-dropped", same, "raising a wrong class's logit by 8 leaves every row's loss unchanged")
    r = m.focal_loss(X, T, alpha=0.25) / m.focal_loss(X, T, alpha=0.75)
    check("rs1004", "constant-alpha", torch.allclose(r, torch.full_like(r, 1 / 3)), "loss(.25)/loss(.75) = 1/3 on every row")
    m = load("andrypur_hub_tgnn_focal_loss")
    constant_alpha_sigmoid("andrypur", lambda a: m.FocalLoss(alpha=a))
    m = load("madihasamo_road_weather_focal_loss")
    x = torch.tensor([[-12.0]])
    g = grad(lambda z: m.focal_binary_cross_entropy(z, torch.ones(1, 1)), x)
    gr = grad(lambda z: ref_sig(z, torch.ones(1, 1), None).mean(), x) * 7
    check(
        "madihasamo",
        "probability-clamp",
        float(g.abs()) < 1e-3 * float(gr.abs()),
        f"positive at logit -12: gradient {float(g):.2e} vs reference {float(gr):.2e} (x7 scale)",
    )
    m = load("nathanxavier_cvlandguided_focal_loss")
    err = raises(lambda: m.FocalLoss())
    check("nathanxavier", "hardcoded-cuda", err is not None, f"constructing on CPU: {err}")
    with cuda_as_cpu():
        inverted_alpha("nathanxavier", lambda: m.FocalLoss())
    m = load("mohitsharma29_noisyactions_focal_loss")
    err = raises(lambda: m.WeightedFocalLoss())
    check("mohitsharma", "cuda-default", err is not None, f"constructing with defaults on CPU: {err}")
    inverted_alpha("mohitsharma", lambda: m.WeightedFocalLoss(device="cpu"))
    m = load("kimsungyong97_focal_loss")
    inverted_alpha("kimsungyong", lambda: m.WeightedFocalLoss())
    m = load("meghbhalerao_hcim_mme_focal_loss")
    constant_alpha_softmax("meghbhalerao", lambda a: _rowwise(m.FocalLoss(5, alpha=a)))
    m = load("thedeep_experiments_focal_loss")
    constant_alpha_sigmoid("thedeep", lambda a: m.FocalLoss(alpha=a))
    m = load("zhw_e8_lamar_focal_loss")
    constant_alpha_sigmoid("zhw_e8", lambda a: m.FocalLoss(alpha=a))


def _rowwise(loss):
    return lambda x, t: torch.stack([loss(x[i : i + 1], t[i : i + 1]) for i in range(len(t))])


def buggy_checks_b():
    m = load("tuongtranngoc_deeplabv3_focal_loss")
    ignore_denominator("tuongtranngoc", m.DeepLav3FocalLoss(gamma=2), 255, ref_soft)
    constant_alpha_softmax("tuongtranngoc", lambda a: _rowwise(m.DeepLav3FocalLoss(alpha=a, gamma=2)))
    m = load("heliochromic_uavid_focal_loss")
    same = torch.allclose(m.PixelwiseFocalLoss(alpha=torch.tensor([0.1, 0.2, 0.3, 0.4, 5.0]))(X, T), m.PixelwiseFocalLoss()(X, T))
    check(
        "heliochromic",
        "alpha-ignored",
        same and torch.allclose(m.PixelwiseFocalLoss(alpha=0.25)(X, T), m.PixelwiseFocalLoss()(X, T)),
        "per-class or scalar alpha: identical loss",
    )
    ignore_denominator("heliochromic", m.PixelwiseFocalLoss(), -100, ref_soft)
    m = load("sodalone_fcos_focal_loss")
    pred = torch.tensor([[20.0, 0.0, 0.0]])
    out = m.focal_loss(pred, torch.tensor([0]))
    check(
        "sodalone",
        "log-of-sigmoid",
        not torch.isfinite(out).all(),
        f"background anchor, class logit +20: loss {out[0].tolist()} (reference {ref_sig(pred, torch.zeros(1, 3))[0, 0]:.2f})",
    )
    m = load("xiaodongww_focal_loss")
    err = raises(lambda: m.FocalLoss()(X, T))
    check("xiaodongww", "hardcoded-cuda", err is not None, f"forward on CPU: {err}")
    with cuda_as_cpu():
        out = m.FocalLoss(gamma=2)(SAT, torch.tensor([0]))
    check(
        "xiaodongww",
        "log-of-softmax",
        torch.isnan(out),
        f"logits [100, -100, 0, 0, 0], label 0: {float(out)} (reference {float(ref_soft(SAT, torch.tensor([0]))):.4f})",
    )
    m = load("bigcat26_cry_detection_focal_loss")
    r = float(
        m.FocalLoss(2, alpha=0.25)(torch.tensor([[-0.2, 0.7]]), torch.tensor([0])) / m.FocalLoss(2, alpha=0.75)(torch.tensor([[-0.2, 0.7]]), torch.tensor([0]))
    )
    check(
        "bigcat26", "constant-alpha", abs(r - 1 / 3) < 1e-5, f"a positive and a negative: loss(.25)/loss(.75) = {r:.4f} (alpha_t would weight them 1/3 and 3)"
    )
    m = load("like413_macn_focal_loss")
    out = m.FocalLoss(class_num=5)(SAT, torch.tensor([1]))
    check(
        "like413",
        "log-of-softmax",
        not torch.isfinite(out),
        f"label 1 at logit -100 (gap 200): {float(out)} (reference {float(ref_soft(SAT, torch.tensor([1]))):.2f})",
    )
    constant_alpha_softmax("like413", lambda a: _rowwise(m.FocalLoss(class_num=5, alpha=a)))
    m = load("ineedsleep_mmcoref_focal_loss")
    two = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    best = float(m.FocalLoss()(torch.tensor([[20.0, 20.0, -20.0, -20.0, -20.0]]), two))
    check(
        "mmcoref",
        "softmax-as-binary",
        best > 0.1,
        f"two positive labels, logits +-20: loss {best:.4f} (per-class sigmoid reference {float(ref_sig(torch.tensor([[20.0, 20, -20, -20, -20]]), two, None).sum()):.1e})",
    )
    row = lambda v: torch.tensor([[v, 0.0, 0.0, 0.0, 0.0]])  # noqa: E731
    one = torch.tensor([[1.0, 0, 0, 0, 0]])
    flat = abs(float(m.FocalLoss()(row(-30.0), one)) - float(m.FocalLoss()(row(-40.0), one)))
    check("mmcoref", "probability-clamp", flat < 1e-4, f"a positive at logit -30 vs -40: loss changes by {flat:.1e} (clamped; an unclamped log changes by ~10)")
    m = load("simsara_lndcml_binary_focal_loss")
    err = raises(lambda: m.BinaryFocalLoss()(torch.sigmoid(X), YB))
    check("simsara", "alpha-none-crash", err is not None, f"defaults: {err}")
    p = torch.tensor([[0.5]])
    w = float(m.BinaryFocalLoss(alpha=0.25)(p, torch.ones(1, 1)) / -torch.log(p))
    check("simsara", "alpha-inverted", abs(w - 0.75) < 1e-5, f"a positive weighted {w:.2f} at alpha=0.25")
    m = load("anniegilmore_focal_loss")
    err = raises(lambda: m.FocalLoss()(X, T))
    check(
        "anniegilmore",
        "alpha-none-crash",
        err is not None and raises(lambda: m.FocalLoss(alpha=[1.0] * 5)(X, T)) is not None,
        f"defaults: {err}; list alpha raises too",
    )
    m = load("nakashimn_kaggle_template_focal_loss")
    out = m.FocalLoss()(SAT, F.one_hot(torch.tensor([0]), 5).float())
    check("nakashimn", "log-of-softmax", torch.isnan(out), f"logits [100, -100, 0, 0, 0], label 0: {float(out)}")
    m = load("rruisong_cohff_focal_loss")
    check(
        "rruisong",
        "reduction-ignored",
        torch.allclose(m.FocalLoss(reduction="sum")(X, T), m.FocalLoss()(X, T)) and m.FocalLoss(reduction="none")(X, T).dim() == 0,
        "'sum' and 'none' return the mean",
    )
    check(
        "rruisong",
        "weight-ignored",
        torch.allclose(m.FocalLoss(weight=torch.tensor([5.0, 1, 1, 1, 1]))(X, T), m.FocalLoss()(X, T)),
        "weight [5,1,1,1,1] changes nothing",
    )
    m = load("knjcode_kaggle_seti_focal_loss")
    check(
        "knjcode",
        "reduction-none",
        m.FocalLoss(reduction="none")(X, YB) is None and torch.allclose(m.FocalLoss()(X, YB), ref_sig(X, YB, None).mean(), atol=1e-6),
        "reduction='none' returns None; 'mean' = reference",
    )


def buggy_checks_c():
    m = load("heylynne_focal_loss_multiclass")
    x3 = torch.randn(2, 5, 4)
    t3 = torch.randint(0, 5, (2, 4))
    ce = float(F.cross_entropy(x3, t3))
    g0 = float(m.FocalLoss(gamma=0)(x3, t3))
    g2 = float(m.FocalLoss(gamma=2)(x3, t3))
    ref2 = float(ref_soft(x3.movedim(1, -1).reshape(-1, 5), t3.reshape(-1)).mean())
    check(
        "heylynne",
        "pt-from-logp",
        abs(g2 - ref2) > 0.1 * ref2 and abs(g2 - g0) > 0.1 * g0,
        f"gamma=2: {g2:.4f} vs reference {ref2:.4f}; factor (1 - log p_t)^2 >= 1",
    )
    check("heylynne", "sums-every-class", abs(g0 - ce) > 0.1 * ce, f"gamma=0: {g0:.4f} vs cross entropy {ce:.4f} (every class's -log p is added)")
    err = raises(lambda: m.FocalLoss()(X, T))
    check("heylynne", "requires-3d", err is not None, f"(N, C) input: {err}")
    m = load("itakurah_focal_loss_multiclass")
    out = m.FocalLoss(task_type="multi-class", num_classes=5)(SAT, torch.tensor([0]))
    check("itakurah", "log-of-softmax", torch.isnan(out), f"logits [100, -100, 0, 0, 0], label 0: {float(out)}")
    err = raises(lambda: m.FocalLoss(alpha=0.25, task_type="multi-class", num_classes=5)(X, T))
    check("itakurah", "scalar-alpha-crash", err is not None, f"alpha=0.25: {err}")
    m = load("lewfish_homely_hobby_focal_loss")
    out = m.focal_loss(torch.tensor([[20.0]]), torch.zeros(1, 1))
    check(
        "lewfish",
        "log-of-sigmoid",
        not torch.isfinite(out),
        f"negative at logit +20: {float(out)} (reference {float(ref_sig(torch.tensor([[20.0]]), torch.zeros(1, 1))):.2f})",
    )
    m = load("catalyst_focal_loss_multiclass")
    loss = m.FocalLossMultiClass()
    rows_ok = torch.allclose(loss(X, T), ref_sig(X, Y).mean(0).sum())
    x4 = torch.randn(2, 5, 3, 3)
    t4 = torch.randint(0, 5, (2, 3, 3))
    ref4 = ref_sig(x4.movedim(1, -1).reshape(-1, 5), F.one_hot(t4.reshape(-1), 5).float()).mean(0).sum()
    check(
        "catalyst",
        "wrong-flatten",
        rows_ok and abs(float(loss(x4, t4)) - float(ref4)) > 1e-3,
        f"(N, C) = reference; (2, 5, 3, 3): {float(loss(x4, t4)):.4f} vs per-pixel reference {float(ref4):.4f}",
    )
    m = load("bloodaxe_pytorch_toolbelt_focal_loss")
    y = YB.clone()
    y[:4] = -1
    keep = y != -1
    value = float(m.focal_loss_with_logits(X, y, ignore_index=-1))
    kept = float(ref_sig(X[keep], y[keep]).mean())
    check(
        "toolbelt",
        "ignore-denominator",
        abs(value - kept * float(keep.float().mean())) < 1e-5,
        f"half ignored: {value:.4f} = {float(keep.float().mean()):.2f} x kept mean {kept:.4f}",
    )
    m = load("nurzhanovchingiz_sigmoid_focal_loss")
    pred = torch.randn(2, 1, 3, 3) * 3
    tgt = (torch.rand(2, 3, 3) < 0.5).float()
    out = float(m.SigmoidFocalLoss(255)(pred, tgt))
    refv = float(ref_sig(pred.reshape(-1), tgt.reshape(-1)).mean())
    check("nurzhanov", "logit-formula-on-probs", out < 0, f"loss {out:.4f} (negative) vs reference {refv:.4f}")
    tgt2 = tgt.clone()
    tgt2[0] = 255
    full = m.SigmoidFocalLoss(255, reduction="none")(pred, tgt2)
    check(
        "nurzhanov",
        "ignore-denominator",
        abs(float(m.SigmoidFocalLoss(255)(pred, tgt2)) - float(full.sum() / full.numel())) < 1e-6 and float(full[0].abs().sum()) == 0.0,
        "ignored image contributes 0 but counts in the mean",
    )
    err = raises(lambda: m.SigmoidFocalLoss(255)(X, Y))
    check("nurzhanov", "requires-bhw", err is not None, f"(N, C) rows: {err}")
    m = load("amphibian_dev_toad_focal_loss")
    err = raises(lambda: m.FocalLoss()(X, T))
    check("toad", "always-crashes", err is not None, f"any call: {err}")

    class _Patched:
        def __getattr__(self, name):
            return getattr(F, name)

        @staticmethod
        def sigmoid(x, dim=None):
            return torch.sigmoid(x)

    m.F = _Patched()
    out = m.FocalLoss()(X, T)
    check("toad", "sign-flipped", float(out) < 0, f"crash worked around: loss {float(out):.4f} (negative)")
    x2 = X.clone()
    x2[torch.arange(8), (T + 1) % 5] += 8
    check("toad", "negatives-dropped", torch.allclose(m.FocalLoss()(x2, T), out), "raising a wrong class's logit changes nothing")
    m = load("vermeille_torchelie_focal_loss")
    batch_coupled("torchelie", m.FocalLoss(gamma=2))
    check("torchelie", "default-gamma0", torch.allclose(m.FocalLoss()(X, T), F.cross_entropy(X, T)), "at the default gamma=0 it equals CE (bug hidden)")
    m = load("mediapipe_lstm_focal_loss")
    err = raises(lambda: m.FocalLoss())
    check("mediapipe", "hardcoded-cuda", err is not None, f"constructing on CPU: {err}")
    with cuda_as_cpu():
        two = torch.tensor([[0.7, -0.3]])
        w = float(m.FocalLoss()(two, torch.tensor([[1.0, 0.0]])) * 2 / 1)
        parts = ref_sig(two, torch.tensor([[1.0, 0.0]]), None)[0]
        expect_inverted = float(0.75 * parts[0] + 0.25 * parts[1])
        check("mediapipe", "alpha-inverted", abs(w - expect_inverted) < 1e-5, f"two columns: sum {w:.4f} = 0.75*positive + 0.25*negative")
        err = raises(lambda: m.FocalLoss()(X, Y))
        check("mediapipe", "two-columns", err is not None, f"5 columns: {err}")


def main() -> int:
    correct_checks()
    buggy_checks_a()
    buggy_checks_b()
    buggy_checks_c()
    failed = [result for result in RESULTS if not result[2]]
    print(f"{len(RESULTS) - len(failed)}/{len(RESULTS)} checks hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
