"""A crash is a finding, not the end of the audit (issue 21 point 6).

:func:`diagnose` names what made a call of the target fail, in words, at the user's own line: a
hard-coded CUDA device on a machine without one, a missing ``super().__init__()``, a bare
``assert`` (its condition quoted from the source), an integer dtype that ``one_hot`` or an index
needs, an argument whose value cannot be used. :func:`furthest` picks, among the calling
conventions calibration tried, the one whose call got furthest into the target's code.

:func:`work_around` then looks for a way to run the target anyway — CUDA calls run on the CPU
(:func:`cuda_on_cpu`, patched in the lint child only), nn.Module's state set before its
``__init__`` (what ``super().__init__()`` does, so ``__call__`` reaches ``forward``), another value
for an argument whose default crashes (``alpha=None`` -> 0.25 or a per-class vector, ``weight=None``
-> ones) — so lint reports the crash *and* audits the rest, saying which workaround it used.
"""

from __future__ import annotations

import ast
import contextlib
import io
import linecache
import os
import re
import tokenize
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch

from lossaudit.lint.calibrate import calibrate, error_text
from lossaudit.lint.kinds import FOCAL_KINDS

if TYPE_CHECKING:
    from lossaudit.lint.locate import Locator
    from lossaudit.lint.subject import Calibration, Subject

CUDA_TEXTS = (
    "not compiled with cuda",
    "no nvidia driver",
    "no cuda gpus",
    "cuda driver",
    "cuda error",
    "cuda runtime",
    "cudaerror",
    "expected all tensors to be on the same device",
    "cuda-capable device",
    "torch.cuda",
)
MODULE_STATE = (
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_parameters",
    "_buffers",
    "_modules",
    "_non_persistent_buffers_set",
    "_state_dict_hooks",
    "_is_full_backward_hook",
    "before Module.__init__() call",
)
"""What an error names when nn.Module's ``__init__`` never ran on the instance."""
INTEGER_INDEX_TEXTS = (
    "one_hot is only applicable to index tensor",
    "tensors used as indices must be long",
    "expected dtype int32/int64 for index",
    "expected scalar type long",
    "expected object of scalar type long",
)
PYTHON2_NAMES = {"xrange": "range", "unicode": "str", "long": "int", "basestring": "str", "unichr": "chr", "raw_input": "input"}
SHAPE_WORDS = re.compile(r"\b(dim|ndim|ndimension|shape|size)\b")
"""What an assertion about the input's shape mentions (then (B, C, L) inputs are tried)."""
ARGUMENTS = ("alpha", "weight", "class_weight", "pos_weight", "weights", "alphas")
"""Arguments whose crashing value lint replaces to run the rest of the audit."""


@dataclass
class Cause:
    """Why a call failed: ``kind`` ('device', 'module-init', 'assert', 'integer-index',
    'argument' or 'other'), the cause in ``words`` (empty when unknown), the deepest line of the
    target's own file in the traceback and its source text."""

    kind: str
    """'device', 'module-init', 'assert', 'shape', 'fixed-shape', 'python2', 'integer-index',
    'argument' or 'other'."""
    words: str = ""
    line: int | None = None
    source: str = ""
    argument: str | None = None


def user_frame(error: BaseException, locator: Locator) -> tuple[int | None, str, int]:
    """(line, source text, depth): the deepest frame of ``error``'s traceback in the target's
    file, and how many of the traceback's frames lie in that file."""
    if locator.absolute is None or error.__traceback__ is None:
        return None, "", 0
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if os.path.realpath(frame.filename) == locator.absolute]
    if not frames:
        return None, "", 0
    last = frames[-1]
    source = _without_comment((last.line or linecache.getline(last.filename, cast(int, last.lineno))).strip())
    return last.lineno, source, len(frames)


def _without_comment(source: str) -> str:
    """A source line without its trailing ``# comment``."""
    if "#" not in source:
        return source
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                return source[: token.start[1]].rstrip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return source


def _assert_condition(source: str) -> str:
    """The condition of ``assert cond, message`` as written, else the line without 'assert'."""
    try:
        node = ast.parse(source).body[0]
    except (SyntaxError, IndexError):
        return source.removeprefix("assert").strip()
    return ast.unparse(node.test) if isinstance(node, ast.Assert) else source


def _named_argument(source: str, subject: Subject | None) -> str | None:
    """A replaceable argument (:data:`ARGUMENTS`) that the target declares and ``source`` uses."""
    if subject is None:
        return None
    for name in ARGUMENTS:
        if re.search(rf"\b{name}\b", source) and subject.accepts(name) and subject.signature is not None and name in subject.signature.parameters:
            return name
    return None


def diagnose(error: BaseException, locator: Locator, subject: Subject | None = None) -> Cause:
    """What made ``error`` happen, in words, at the user's line."""
    line, source, _ = user_frame(error, locator)
    text = f"{type(error).__name__}: {error}"
    lowered = text.lower()
    quoted = f" (`{source}`)" if source else ""
    if any(mark in lowered for mark in CUDA_TEXTS) or "cuda" in source.lower() and "device" in lowered:
        where = "this machine has no CUDA device" if not torch.cuda.is_available() else "lint's inputs are on the CPU"
        return Cause("device", f"a hard-coded CUDA device{quoted}: {where}; take the device from the inputs (logits.device)", line, source)
    if isinstance(error, AttributeError) and any(mark in str(error) for mark in MODULE_STATE):
        name = getattr(subject.obj, "__name__", "the class") if subject is not None and subject.is_class else "the class"
        return Cause(
            "module-init", f"nn.Module's state is missing: {name}.__init__ does not call super().__init__(), so calling the instance fails", line, source
        )
    if isinstance(error, AssertionError):
        condition = _assert_condition(source) if source.startswith("assert") else ""
        if condition:
            said = f" ({error})" if str(error).strip() else ""
            return Cause("assert", f"the target's own assertion `{condition}` is false for this input{said}", line, source)
        return Cause("assert", f"an assertion failed{quoted}", line, source)
    if "is invalid for input of size" in lowered:
        return Cause("fixed-shape", f"a hard-coded shape{quoted}: the loss assumes one batch size or element count", line, source)
    if isinstance(error, NameError) and getattr(error, "name", None) in PYTHON2_NAMES:
        return Cause("python2", f"`{error.name}` is a Python 2 name{quoted}; Python 3 has {PYTHON2_NAMES[cast(str, error.name)]}", line, source)
    if "dimension out of range" in lowered or "not enough values to unpack" in lowered or "too many indices for tensor" in lowered:
        return Cause(
            "shape",
            f"the target reads a dimension its input does not have{quoted}: it expects inputs of another shape (more or fewer dimensions)",
            line,
            source,
        )
    if any(mark in lowered for mark in INTEGER_INDEX_TEXTS):
        needs = "F.one_hot needs int64 class indices" if "one_hot" in lowered else "indexing by the targets needs integer (int64) class labels"
        return Cause("integer-index", f"{needs}{quoted}, and these targets were not", line, source)
    argument = _named_argument(source, subject)
    if argument is not None:
        value = cast("Subject", subject).value(argument, None)  # an argument is named for a subject only
        return Cause("argument", f"{argument}={_short(value)} cannot be used here{quoted}", line, source, argument=argument)
    return Cause("other", "", line, source)


def _short(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor({value.tolist()})" if value.numel() <= 6 else f"a tensor of shape {tuple(value.shape)}"
    return repr(value)


def describe(error: BaseException, locator: Locator, subject: Subject | None = None) -> str:
    """:func:`~lossaudit.lint.calibrate.error_text` and, where known, the cause in words."""
    text = error_text(error)
    cause = diagnose(error, locator, subject)
    if cause.words:
        return f"{text}; cause: {cause.words}"
    if cause.source:
        return f"{text} at line {cause.line} (`{cause.source}`)"
    return text


def furthest(attempts: list[dict], locator: Locator) -> dict | None:
    """The failed attempt whose call got furthest into the target's code: the most frames in its
    file, then the latest line; on a tie, a focal kind's convention (sigmoid, softmax, binary)
    before the others, then the first tried."""
    scored = []
    for order, attempt in enumerate(attempts):
        error = attempt.get("exception")
        if error is None:
            continue
        line, _, depth = user_frame(error, locator)
        kind = str(attempt.get("convention") or "").split(":")[0]
        scored.append(((depth, line or 0), kind in FOCAL_KINDS, -order, attempt))
    if not scored:
        return None
    return max(scored, key=lambda item: item[:3])[3]


def all_alike(attempts: list[dict], locator: Locator) -> bool:
    """Whether every failed attempt stopped at the same place of the target's code (the convention
    then does not matter: a constructor or an argument fails whatever the inputs)."""
    places = {(user_frame(a["exception"], locator)[0], type(a["exception"]).__name__) for a in attempts if a.get("exception") is not None}
    return len(places) <= 1


# -- running .cuda() on the CPU ---------------------------------------------------------------


def _is_cuda(device: object) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.split(":")[0].strip().lower() == "cuda"
    return False


FACTORIES = (
    "tensor",
    "as_tensor",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "linspace",
    "logspace",
    "rand",
    "randn",
    "randint",
    "randperm",
    "eye",
    "zeros_like",
    "ones_like",
    "full_like",
    "empty_like",
    "rand_like",
    "randn_like",
    "randint_like",
    "scalar_tensor",
)
TENSOR_FACTORIES = ("new_tensor", "new_zeros", "new_ones", "new_full", "new_empty")
LEGACY_TYPES = (
    "FloatTensor",
    "DoubleTensor",
    "HalfTensor",
    "BFloat16Tensor",
    "LongTensor",
    "IntTensor",
    "ShortTensor",
    "CharTensor",
    "ByteTensor",
    "BoolTensor",
)


@dataclass
class CudaRecord:
    """Where the target asked for CUDA while :func:`cuda_on_cpu` was active."""

    calls: list[str] = field(default_factory=list)

    def cpu_kwargs(self, kwargs: dict) -> dict:
        if _is_cuda(kwargs.get("device")):
            self.calls.append("device='cuda'")
            return {**kwargs, "device": "cpu"}
        return kwargs

    def factory(self, original):
        def wrapper(*args, **kwargs):
            return original(*args, **self.cpu_kwargs(kwargs))

        return wrapper

    def to(self, original):
        def wrapper(module_or_tensor, *args, **kwargs):
            if args and (_is_cuda(args[0]) or isinstance(args[0], int) and not isinstance(args[0], bool)):
                self.calls.append(".to('cuda')")
                args = ("cpu", *args[1:])
            return original(module_or_tensor, *args, **self.cpu_kwargs(kwargs))

        return wrapper

    def cuda(self):
        def wrapper(module_or_tensor, *args, **kwargs):
            self.calls.append(".cuda()")
            return module_or_tensor

        return wrapper

    def type_(self, original):
        def wrapper(tensor, dtype=None, *args, **kwargs):
            if dtype is None:
                return original(tensor)
            if isinstance(dtype, str) and "cuda." in dtype:
                self.calls.append(f".type({dtype!r})")
                dtype = dtype.replace("cuda.", "")
            elif isinstance(dtype, type) and getattr(dtype, "__module__", "") == "torch.cuda":
                self.calls.append(f".type(torch.cuda.{dtype.__name__})")
                dtype = getattr(torch, dtype.__name__)
            return original(tensor, dtype, *args, **kwargs)

        return wrapper


@contextlib.contextmanager
def cuda_on_cpu() -> Iterator[CudaRecord]:
    """Run ``.cuda()``, ``.to('cuda')``, ``device='cuda'`` factories and ``torch.cuda.*Tensor`` on
    the CPU while active; restores torch on exit. Used in lint's child process only."""
    record = CudaRecord()
    replacements: list[tuple[Any, str, Any]] = [(torch, name, record.factory(getattr(torch, name))) for name in FACTORIES if hasattr(torch, name)]
    replacements += [(torch.Tensor, name, record.factory(getattr(torch.Tensor, name))) for name in TENSOR_FACTORIES]
    replacements += [
        (torch.Tensor, "to", record.to(torch.Tensor.to)),
        (torch.nn.Module, "to", record.to(torch.nn.Module.to)),
        (torch.Tensor, "cuda", record.cuda()),
        (torch.nn.Module, "cuda", record.cuda()),
        (torch.Tensor, "type", record.type_(torch.Tensor.type)),
    ]
    replacements += [(torch.cuda, name, getattr(torch, name)) for name in LEGACY_TYPES if hasattr(torch, name)]
    missing = object()
    saved = [(owner, name, vars(owner).get(name, missing)) for owner, name, _ in replacements]
    for owner, name, replacement in replacements:
        setattr(owner, name, replacement)
    try:
        yield record
    finally:
        for owner, name, original in reversed(saved):
            if original is missing:
                delattr(owner, name)  # it was inherited (torch.Tensor.to lives on TensorBase)
            else:
                setattr(owner, name, original)


# -- workarounds --------------------------------------------------------------------------------


def _substitutes(name: str, value: object, classes: int) -> list[object]:
    """Values to try for an argument whose value crashes, in order."""
    ramp = [round(0.25 + 0.5 * c / max(classes - 1, 1), 4) for c in range(classes)]
    if name in ("alpha", "alphas"):
        options: list[object] = [0.25, ramp, torch.tensor(ramp), None]
    else:
        options = [torch.ones(classes), [1.0] * classes, None]
    return [option for option in options if not _same_value(option, value)]


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


@dataclass
class Workaround:
    """What let the audit run: the subject it runs on, its calibration, whether CUDA calls run on
    the CPU, and what was done, in words."""

    subject: Subject
    calibration: Calibration
    cuda_on_cpu: bool = False
    described: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "; ".join(self.described)


def work_around(subject: Subject, calibration: Calibration, locator: Locator, options: dict, allow_cuda_patch: bool) -> Workaround | None:
    """A way to run a target that fails under every calling convention, or None.

    Up to three workarounds are combined, each chosen from the causes of the current failures:
    CUDA calls run on the CPU (only where ``allow_cuda_patch``: in lint's child process), nn.Module's
    state set before ``__init__``, and another value for an argument the failing line uses (or,
    failing that, for alpha/weight when the target declares them)."""
    described: list[str]
    current, cuda, described = subject, False, []
    attempts = calibration.attempts
    tried: set[str] = set()
    for _ in range(4):
        step = next((step for step in _steps(attempts, locator, current, allow_cuda_patch) if step not in tried), None)
        if step is None:
            return None
        tried.add(step)
        if step in ARGUMENTS:
            found = _substitute(current, step, options, cuda, described)
            if found is not None:
                return found
            continue
        fixed = current.variant()
        if step == "device":
            cuda = True
        elif step == "shape":
            fixed.sequence = True
        else:
            fixed.module_init = True
        current, described = fixed, [*described, STEP_WORDS[step]]
        current.workarounds = list(described)
        calibrated = _calibrated(current, options, cuda)
        if calibrated.convention is not None:
            return Workaround(current, calibrated, cuda, described)
        attempts = calibrated.attempts
    return None


STEP_WORDS = {
    "device": "CUDA calls (.cuda(), .to('cuda'), device='cuda') run on the CPU",
    "shape": "(B, C, L) inputs and (B, L) targets (the rows as 2 sequences), the only shape its checks accept",
    "module-init": "nn.Module.__init__ run on the instance first (as the missing super().__init__() would), so calling it reaches forward",
}


def _steps(attempts: list[dict], locator: Locator, subject: Subject, allow_cuda_patch: bool) -> list[str]:
    """The workarounds worth trying, in order: CUDA on the CPU when any call failed on a CUDA
    device; then by the causes of the failures, the furthest call's first: nn.Module's
    state, (B, C, L) inputs, another value of the argument the failing line uses; then another
    value of each replaceable argument the target declares."""
    failed = [attempt for attempt in attempts if attempt.get("exception") is not None]
    first = furthest(failed, locator)
    ordered = ([first] if first is not None else []) + [attempt for attempt in failed if attempt is not first]
    causes = [diagnose(attempt["exception"], locator, subject) for attempt in ordered]
    steps = ["device"] if allow_cuda_patch and any(cause.kind == "device" for cause in causes) else []
    for cause in causes:
        if cause.kind == "module-init" and subject.is_class:
            steps.append("module-init")
        elif cause.kind == "shape" or cause.kind == "assert" and SHAPE_WORDS.search(cause.source):
            steps.append("shape")
        elif cause.argument:
            steps.append(cause.argument)
    steps += [name for name in ARGUMENTS if subject.signature is not None and name in subject.signature.parameters]
    return list(dict.fromkeys(steps))


def _substitute(subject: Subject, name: str, options: dict, cuda: bool, described: list[str]) -> Workaround | None:
    """The target run with another value for the argument ``name``, whose own value crashes."""
    value = subject.value(name, None)
    for option in _substitutes(name, value, subject.num_classes):
        candidate = subject.variant(**{name: option})
        found = _calibrated(candidate, options, cuda)
        if found.convention is not None:
            words = [*described, f"{name}={_short(option)} passed instead of {name}={_short(value)}, which crashes"]
            candidate.workarounds = words
            return Workaround(candidate, found, cuda, words)
    return None


def _calibrated(subject: Subject, options: dict, cuda: bool) -> Calibration:
    from lossaudit.lint.subject import settle_layout

    with cuda_on_cpu() if cuda else contextlib.nullcontext():
        return settle_layout(subject, calibrate(subject, options["kind"], options["inputs"], options["targets"], options["seed"]))
