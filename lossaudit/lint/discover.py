"""Find candidate losses in files and folders by reading their AST, without importing anything.

A candidate is a public top-level class or function (see :data:`LOOKED_FOR`):

- whose name names a loss lint has a kind for (:func:`_named_loss`): it contains 'focal' (any
  case: varifocal and quality focal included), or 'asymmetric' and 'loss' (ASL), or 'label
  smoothing' (label-smoothing CE), or has the word ASL, QFL or VFL (``ASLLoss``, ``qfl_loss``);
- a function that takes ``gamma`` after its first two parameters (it is called as
  ``fn(inputs, targets, **init)``, so a ``gamma`` among those two is not a loss's) and either
  raises something to the power ``gamma`` or calls a focal reference (so a command-line
  function that merely passes a ``gamma`` option on is not one);
- a class deriving from a torch loss or ``nn.Module`` whose ``__init__`` takes ``gamma``;
- a class whose ``forward`` or ``__call__`` calls a focal reference (a call whose name contains
  'focal': ``sigmoid_focal_loss(...)``, ``F.focal_loss(...)``, ``kornia.losses.focal_loss(...)``).

pytest code is not a candidate: ``test_*`` functions, ``Test*`` classes, ``conftest.py`` and the
folders named ``tests``/``test`` below the path given. Exclusion globs are matched against each
file's and folder's path relative to the path given, and against its name.

A candidate is then called only if its signature fits a loss (:func:`not_a_loss`, read from the
AST as well, so nothing runs): a function whose first two positional parameters are tensor-like
inputs (``(logits, targets)``, ``(input, target)``, ``(pred, gt)``), or a class whose ``forward``
(else ``__call__``, else a base class's of the same file) takes two such inputs. A parameter is
*not* tensor-like when its annotation says so (``int``, ``str``, ``Path``, ``dict``...), its default
is a number, string or bool (a setting), its name is a setting's, a count's, a path's, a
configuration's or a logger's (``gamma``, ``step``, ``path``, ``cfg``, ``writer``: see
:data:`NOT_TENSOR_NAMES`), or the body uses it as one (``open(path)``, ``cfg["key"]``,
``writer.add_scalar``). Anything else counts as tensor-like, so an unusual name is still audited.
A required parameter after the two inputs must be tensor-like too, or a hyper-parameter lint
supplies (kornia's required ``alpha``): lint would otherwise have to make up a path or a logger.
A candidate that does not fit is listed as skipped with the reason (``log_focal_stats(values,
step)``: "its second input 'step' is a step or epoch count by its name"), never imported or run.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from lossaudit.errors import InputError
from lossaudit.io.symbols import parse_python
from lossaudit.lint.kinds import FAMILY_WORDS, FOCAL_CALL, NAME_SIGNS

SKIPPED_FOLDERS = {
    ".git",
    ".hg",
    ".venv",
    "venv",
    "env",
    "__pycache__",
    "build",
    "dist",
    "node_modules",
    "site-packages",
    ".tox",
    ".nox",
    ".eggs",
    "tests",
    "test",
}
SKIPPED_FILES = {"conftest.py"}
LOSS_BASES = ("Module", "_Loss", "_WeightedLoss")
CALL_METHODS = ("forward", "__call__")
LOOKED_FOR = (
    "public top-level classes and functions named *focal*, *asymmetric*loss*, *label*smoothing* or with the word "
    "ASL, QFL or VFL, functions taking gamma after (inputs, targets) that raise to "
    "its power or call a focal loss, loss classes whose __init__ takes gamma, and classes whose forward calls a focal loss "
    "(skipping test_*, Test*, conftest.py, tests/, test/, hidden, virtual-environment and build folders, and exclude globs)"
)


NOT_A_LOSS = "not a loss signature"
"""How a candidate whose signature does not fit a loss is listed (``skipped: not a loss signature: ...``)."""
NOT_TENSOR_NAMES: dict[str, frozenset[str]] = {
    "a step or epoch count": frozenset({"step", "steps", "epoch", "epochs", "iter", "iters", "iteration", "iterations", "niter", "batch_idx", "batch_index"}),
    "a hyper-parameter": frozenset(
        {
            "gamma",
            "alpha",
            "beta",
            "eps",
            "epsilon",
            "reduction",
            "reduce",
            "size_average",
            "smooth",
            "smoothing",
            "temperature",
            "lr",
            "momentum",
            "num_classes",
            "n_classes",
            "ignore_index",
            "ignore_label",
        }
    ),
    "a configuration": frozenset(
        {"cfg", "config", "conf", "configs", "args", "opt", "opts", "option", "options", "hparams", "hyperparams", "settings", "kwargs"}
    ),
    "a path or file": frozenset(
        {"path", "paths", "file", "files", "filename", "filenames", "fname", "filepath", "dir", "dirname", "folder", "directory", "fp", "fh", "stream"}
    ),
    "a name or text": frozenset({"name", "names", "tag", "tags", "prefix", "suffix", "title", "msg", "message", "text", "fmt"}),
    "a logger or writer": frozenset({"logger", "writer", "tb", "summary_writer", "tb_writer", "wandb", "run"}),
    "a device, dtype or flag": frozenset({"device", "dtype", "verbose", "debug", "seed"}),
}
"""Parameter names that are not a loss's tensor inputs, by what they are; a name matches as a whole
or by its last ``_`` part (``global_step``, ``log_path``, ``class_names``)."""
NOT_TENSOR_ANNOTATIONS = frozenset(
    {
        "int",
        "float",
        "str",
        "bool",
        "bytes",
        "Path",
        "PathLike",
        "dict",
        "Dict",
        "Mapping",
        "MutableMapping",
        "Logger",
        "SummaryWriter",
        "Namespace",
        "DictConfig",
        "TextIO",
        "IO",
    }
)
TENSOR_ANNOTATIONS = ("Tensor", "ndarray", "Array", "ArrayLike", "Variable")
NUMBER_ANNOTATIONS = frozenset({"float", "int", "bool", "Optional", "Union", "None", "Sequence", "list", "List", "tuple", "Tuple"})
PATH_CALLS = frozenset(
    {"open", "Path", "PurePath", "exists", "isfile", "isdir", "join", "makedirs", "mkdir", "dirname", "basename", "listdir", "remove", "unlink"}
)
METHOD_SIGNS = {
    "items": "a mapping",
    "keys": "a mapping",
    "get": "a mapping",
    "update": "a mapping",
    "write": "a file or writer",
    "writelines": "a file or writer",
    "flush": "a file or writer",
    "info": "a logger",
    "warning": "a logger",
    "debug": "a logger",
    "add_scalar": "a logger or writer",
    "add_scalars": "a logger or writer",
    "add_histogram": "a logger or writer",
    "read_text": "a path",
    "write_text": "a path",
    "open": "a path",
    "mkdir": "a path",
    "exists": "a path",
    "joinpath": "a path",
    "format": "a string",
    "startswith": "a string",
    "endswith": "a string",
    "split": "a string",
    "lower": "a string",
    "upper": "a string",
    "strip": "a string",
}
"""Methods called on a parameter that tensors do not have, by what they show the parameter is."""
ORDINALS = ("first", "second")


@dataclass(frozen=True)
class Candidate:
    """A definition discovery found: ``reason`` says why it looks like a loss; ``skip`` (empty for
    a candidate to audit) why its signature does not fit one, so it is listed but never run."""

    path: Path
    symbol: str
    line: int
    reason: str
    skip: str = ""

    @property
    def target(self) -> str:
        return f"{self.path}:{self.symbol}"


@dataclass
class Discovery:
    """What one path yielded: every candidate in file order (``found``), and one line per file
    that could not be parsed (skipped, so one broken file does not stop the run)."""

    found: list[Candidate] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def candidates(self) -> list[Candidate]:
        """The candidates to audit: those whose signature fits a loss."""
        return [candidate for candidate in self.found if not candidate.skip]

    @property
    def skipped(self) -> list[Candidate]:
        """The candidates listed but not run: their signature does not fit a loss."""
        return [candidate for candidate in self.found if candidate.skip]


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        while isinstance(base, ast.Attribute):
            names.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            names.append(base.id)
    return names


def _method(node: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == name), None)


def _takes_gamma(function: ast.FunctionDef, skip: int = 0) -> bool:
    """Whether ``function`` has a ``gamma`` parameter after its first ``skip`` positional ones."""
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    return any(arg.arg == "gamma" for arg in positional[skip:] + arguments.kwonlyargs)


def _mentions_gamma(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "gamma" or isinstance(n, ast.Attribute) and n.attr == "gamma" for n in ast.walk(node))


def _gamma_exponent(function: ast.FunctionDef) -> bool:
    """Whether ``function`` raises something to a power built from ``gamma`` (``** gamma``,
    ``.pow(gamma)``, ``torch.pow(x, gamma)``)."""
    for node in ast.walk(function):
        if (
            isinstance(node, (ast.BinOp, ast.AugAssign))
            and isinstance(node.op, ast.Pow)
            and _mentions_gamma(node.right if isinstance(node, ast.BinOp) else node.value)
        ):
            return True
        if isinstance(node, ast.Call) and _callee(node) in ("pow", "pow_", "float_power") and any(map(_mentions_gamma, node.args)):
            return True
    return False


def _callee(call: ast.Call) -> str:
    """The last name of what ``call`` calls: ``F.focal_loss(...)`` -> ``focal_loss``."""
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _focal_call(function: ast.FunctionDef) -> str | None:
    """What ``function`` calls first whose name contains 'focal' (``F.focal_loss``), if anything."""
    calls = [item for item in ast.walk(function) if isinstance(item, ast.Call)]
    focal = next((call for call in calls if fnmatchcase(_callee(call).lower(), FOCAL_CALL)), None)
    return ast.unparse(focal.func) if focal is not None else None


def _named_loss(name: str) -> str | None:
    """The reason ``name`` names a focal-family loss, or None: it matches a
    :data:`~lossaudit.lint.kinds.NAME_SIGNS` entry (contains 'focal', 'asymmetric' with 'loss', or
    'label smoothing' with words joined, any case), or has a word of
    :data:`~lossaudit.lint.kinds.FAMILY_WORDS` (words split at underscores and at case changes:
    ``ASLLoss`` is ASL, Loss)."""
    words = {word.lower() for word in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)}
    sign = next((sign for sign in NAME_SIGNS if sign.matches(name)), None)
    if sign is not None:
        return sign.reason
    word = next((word for word in sorted(words & FAMILY_WORDS)), None)
    return f"name has the word {word.upper()}" if word else None


def _function_reason(node: ast.FunctionDef) -> str | None:
    if node.name.startswith("test_"):
        return None
    named = _named_loss(node.name)
    if named:
        return named
    if not _takes_gamma(node, skip=2):
        return None
    if _gamma_exponent(node):
        return "a function raising to the power gamma"
    callee = _focal_call(node)
    return f"a function taking gamma that calls {callee}" if callee else None


def _class_reason(node: ast.ClassDef) -> str | None:
    if node.name.startswith("Test"):
        return None
    named = _named_loss(node.name)
    if named:
        return named
    init = _method(node, "__init__")
    bases = _base_names(node)
    if init is not None and _takes_gamma(init) and any(base in LOSS_BASES or base.endswith("Loss") for base in bases):
        return f"a {bases[0]} whose __init__ takes gamma"
    for name in CALL_METHODS:
        method = _method(node, name)
        callee = _focal_call(method) if method else None
        if callee:
            return f"its {name} calls {callee}"
    return None


def _split_name(name: str) -> str:
    return name.lower().rpartition("_")[2] if "_" in name.strip("_") else name.lower().strip("_")


def _by_name(name: str) -> str | None:
    """What a parameter is by its name when that is not a tensor (:data:`NOT_TENSOR_NAMES`)."""
    for what, names in NOT_TENSOR_NAMES.items():
        if name.lower() in names or _split_name(name) in names:
            return what
    return None


def _by_annotation(annotation: ast.expr | None) -> str | None:
    """The annotation, when it says the parameter is not a tensor (``int``, ``Path``, ``dict``)."""
    if annotation is None:
        return None
    text = ast.unparse(annotation)
    if any(word in text for word in TENSOR_ANNOTATIONS):
        return None
    words = set(re.findall(r"\w+", text))
    return (
        text
        if words & NOT_TENSOR_ANNOTATIONS
        and words <= NOT_TENSOR_ANNOTATIONS | {"Optional", "Union", "None", "os", "pathlib", "typing", "logging", "argparse", "omegaconf"}
        else None
    )


def _by_use(name: str, function: ast.FunctionDef) -> str | None:
    """What the body shows the parameter is when it uses it as no tensor is used: opened or joined
    as a path, counted in ``range``, indexed by a string key, or given a method tensors lack."""
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            if any(isinstance(arg, ast.Name) and arg.id == name for arg in node.args[:1]):
                callee = _callee(node)
                if callee in PATH_CALLS:
                    return f"a path (passed to {ast.unparse(node.func)})"
                if callee == "range":
                    return "a count (passed to range)"
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == name and func.attr in METHOD_SIGNS:
                return f"{METHOD_SIGNS[func.attr]} (its .{func.attr}() is called)"
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == name:
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return f"a mapping (indexed by {key.value!r})"
    return None


def _not_tensor(arg: ast.arg, default: ast.expr | None, function: ast.FunctionDef) -> str | None:
    """Why a positional parameter is not a tensor-like input (None: it may be one)."""
    annotation = _by_annotation(arg.annotation)
    if annotation:
        return f"is annotated {annotation}"
    if arg.annotation is not None and any(word in ast.unparse(arg.annotation) for word in TENSOR_ANNOTATIONS):
        return None
    if isinstance(default, ast.Constant) and default.value is not None:
        return f"has the default {default.value!r} (a setting, not an input)"
    what = _by_name(arg.arg)
    if what:
        return f"is {what} by its name"
    used = _by_use(arg.arg, function)
    return f"is used as {used}" if used else None


def _is_static(function: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)


def _inputs_problem(function: ast.FunctionDef, owner: str = "") -> str | None:
    """Why ``function`` cannot take a loss's two tensor inputs in its first two positional
    parameters (after ``self`` for a method of the class ``owner``), or None when it can."""
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    if owner and not _is_static(function):
        positional, defaults = positional[1:], defaults[1:]
    shown = f"{owner + '.' if owner else ''}{function.name}({', '.join(arg.arg for arg in positional)})"
    if len(positional) < 2 and arguments.vararg is None:
        count = "no positional input" if not positional else f"one positional input ({positional[0].arg!r})"
        return f"{shown} takes {count}; a loss takes two (predictions and targets){_factory(function)}"
    for index, (arg, default) in enumerate(zip(positional[:2], defaults[:2])):
        why = _not_tensor(arg, default, function)
        if why:
            return f"{shown}: its {ORDINALS[index]} input {arg.arg!r} {why}{_factory(function)}"
    keyword_defaults = dict(zip((arg.arg for arg in arguments.kwonlyargs), arguments.kw_defaults))
    required = [arg for arg, default in zip(positional[2:], defaults[2:]) if default is None]
    required += [arg for arg in arguments.kwonlyargs if keyword_defaults[arg.arg] is None]
    for arg in required:  # lint supplies hyper-parameters (kornia's alpha); any other value it would make up
        why = _not_tensor(arg, None, function)
        if why and not _hyper_parameter(arg):
            return f"{shown}: its required parameter {arg.arg!r} {why}"
    return None


def _hyper_parameter(arg: ast.arg) -> bool:
    """Whether a parameter is a number lint can supply (``alpha``, ``gamma: float``), by its name
    or its annotation (``float``, ``int``, ``bool``, optional or not)."""
    what = _by_name(arg.arg)
    if what not in ("a hyper-parameter", None):
        return False
    if arg.annotation is None:
        return what == "a hyper-parameter"
    return set(re.findall(r"\w+", ast.unparse(arg.annotation))) <= NUMBER_ANNOTATIONS


def _factory(function: ast.FunctionDef) -> str:
    """``; it is a loss factory (it returns inner(y_true, y_pred))`` when ``function`` returns a
    function it defines (Keras-style ``focal_loss(gamma, alpha)``); else empty."""
    inner = {node.name: node for node in function.body if isinstance(node, ast.FunctionDef)}
    for node in ast.walk(function):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Name) and node.value.id in inner:
            returned = inner[node.value.id]
            names = ", ".join(arg.arg for arg in returned.args.posonlyargs + returned.args.args)
            return f"; it is a loss factory (it returns {returned.name}({names}))"
    return ""


def _class_problem(node: ast.ClassDef, classes: dict[str, ast.ClassDef], seen: frozenset[str] = frozenset()) -> str | None:
    """Why instances of ``node`` cannot be called on a loss's two inputs, or None: its ``forward``
    (else ``__call__``) is checked, else a base class's of the same file; a class with an outside
    base other than ``nn.Module`` (a library loss) inherits its call, and so fits."""
    for name in CALL_METHODS:
        method = _method(node, name)
        if method is not None:
            return _inputs_problem(method, owner=node.name)
        if name in _assigned(node):
            return None  # forward = some_function: not read further
    bases = _direct_bases(node)
    for base in bases:
        if base in classes and base not in seen:
            return _class_problem(classes[base], classes, seen | {node.name})
    if any(base not in ("Module", "object", "ABC", "Generic") and base not in classes for base in bases):
        return None
    inherited = " (nn.Module's forward raises NotImplementedError)" if "Module" in bases else ""
    return f"{node.name} defines no forward or __call__{inherited}"


def _assigned(node: ast.ClassDef) -> set[str]:
    """The names a class body assigns (``forward = staticmethod(focal)``)."""
    targets = [t for item in node.body if isinstance(item, ast.Assign) for t in item.targets]
    targets += [item.target for item in node.body if isinstance(item, ast.AnnAssign)]
    return {t.id for t in targets if isinstance(t, ast.Name)}


def _direct_bases(node: ast.ClassDef) -> list[str]:
    """The last name of each base: ``nn.Module`` -> ``Module``."""
    names = []
    for base in node.bases:
        if isinstance(base, ast.Subscript):
            base = base.value
        names.append(base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else "")
    return names


def not_a_loss(node: ast.FunctionDef | ast.ClassDef, classes: dict[str, ast.ClassDef] | None = None) -> str | None:
    """Why a candidate's signature does not fit a loss (None: it fits), read from its AST:
    a function needs two tensor-like positional inputs, a class a ``forward``/``__call__`` that
    takes them (``classes``: the file's top-level classes, for inherited ones)."""
    if isinstance(node, ast.ClassDef):
        return _class_problem(node, classes or {})
    return _inputs_problem(node)


def candidates_in_file(path: Path) -> list[Candidate]:
    """The candidates defined at the top level of one file, those whose signature does not fit a
    loss included with their ``skip`` reason.

    Raises:
        InputError: the file cannot be read or parsed.
    """
    found = []
    body = parse_python(path).body
    classes = {node.name: node for node in body if isinstance(node, ast.ClassDef)}
    for node in body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            reason = _function_reason(node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            reason = _class_reason(node)
        else:
            continue
        if reason:
            problem = not_a_loss(node, classes)
            found.append(Candidate(path, node.name, node.lineno, reason, f"{NOT_A_LOSS}: {problem}" if problem else ""))
    return found


def excluded(relative: str, patterns: tuple[str, ...]) -> bool:
    """Whether a glob matches ``relative`` (a path below the discovery root, '/'-separated) or its
    last part; a pattern's trailing '/' is ignored."""
    name = relative.rpartition("/")[2]
    return any(fnmatchcase(text, pattern.rstrip("/")) for pattern in patterns for text in (relative, name))


def python_files(folder: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """The ``.py`` files below ``folder``, sorted, without descending into skipped or excluded
    folders (virtual environments, build output, hidden folders, tests)."""
    files = []
    for current, folders, names in os.walk(folder):
        base = Path(current).relative_to(folder).as_posix()
        prefix = "" if base == "." else f"{base}/"
        folders[:] = [name for name in folders if name not in SKIPPED_FOLDERS and not name.startswith(".") and not excluded(prefix + name, exclude)]
        files += [Path(current, name) for name in names if name.endswith(".py") and name not in SKIPPED_FILES and not excluded(prefix + name, exclude)]
    return sorted(files)


def discover(path: Path, exclude: tuple[str, ...] = ()) -> Discovery:
    """Candidates in a file, or in every ``.py`` file below a folder, in path order (those whose
    signature does not fit a loss included, with their ``skip`` reason).

    The skips and ``exclude`` apply to what is found below a folder; a file named explicitly is
    read whatever its name (its ``test_*``/``Test*`` definitions are still skipped).
    """
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    discovery = Discovery()
    for file in [path] if path.is_file() else python_files(path, exclude):
        try:
            discovery.found += candidates_in_file(file)
        except InputError as error:
            discovery.unreadable.append(f"{error}; skipped")
    return discovery
