"""Configuration files: ``[tool.lossaudit]`` in ``pyproject.toml``, or ``lossaudit.yaml``.

The file is the nearest one, walking up from the current folder, that is a ``pyproject.toml``
with a ``[tool.lossaudit]`` section or a ``lossaudit.yaml``; ``--config PATH`` names one and
``--isolated`` ignores them. Precedence: defaults < file < command line. Keys are the long option
names in kebab-case; unknown keys, wrong types and unknown rule codes are errors (exit 2) that
name the file and the key. Relative paths in the file are relative to the file's folder, and
``package.module:Symbol`` targets are imported from it; a target whose file or module does not
exist is such an error.

    [tool.lossaudit.lint]
    select = ["FL0"]
    fail-on = "warning"
    exclude = ["experiments/*", "*_old.py"]
    targets = [
        "mypkg/losses.py:FocalLoss",
        { target = "mypkg.losses:SoftmaxFocal", init = { alpha = [0.25, 0.75] }, kind = "softmax" },
    ]

    [tool.lossaudit.compare]
    losses = ["ce", "focal", "ghm"]
    strict = true
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from lossaudit.errors import InputError
from lossaudit.formats import FORMATS
from lossaudit.io.symbols import module_source, parse_target, relative_to_cwd
from lossaudit.io.textfiles import parse_toml, parse_yaml, read_text
from lossaudit.losses.registry import LINT_KINDS, PARAMS
from lossaudit.losses.spec import Param, PerClassParam

PARAMS_BY_KEY = {param.key: param for param in PARAMS.values() if isinstance(param, Param)}
PER_CLASS_BY_KEY = {param.key: name for name, param in PARAMS.items() if not isinstance(param, Param)}

PYPROJECT, YAML_NAMES = "pyproject.toml", ("lossaudit.yaml", "lossaudit.yml")
CHOICES = {
    "targets": ("auto", "index", "onehot", "soft", "heatmap"),
    "inputs": ("auto", "logits", "probs"),
    "compare.inputs": ("auto", "logits", "probs", "softmax-probs", "sigmoid-probs"),
    "kind": ("auto", *LINT_KINDS),
    "fail-on": ("error", "warning", "info"),
    "compare.format": FORMATS["compare"],
    "lint.format": FORMATS["lint"],
}
COMPARE_KEYS: dict[str, type | str] = {
    "logits-key": str,
    "targets-key": str,
    "targets": str,
    "background-index": int,
    "ignore-index": int,
    "class-dim": int,
    "inputs": str,
    "label-base": int,
    "class-names": Path,
    "losses": "losses",
    "bins": int,
    **{param.key: "per-class" if param.default is None else int if param.integer else float for param in PARAMS.values()},
    "top": int,
    "top-by": str,
    "strict": bool,
    "format": str,
    "baseline": Path,
    "fail-if-share-moves": float,
    "loss-init": "loss-init",
    "timeout": float,
    "memory-limit": int,
}
LINT_KEYS: dict[str, type | str] = {
    "targets": "entries",
    "select": list,
    "ignore": list,
    "fail-on": str,
    "kind": str,
    "inputs": str,
    "num-classes": int,
    "ignore-index": int,
    "seed": int,
    "timeout": float,
    "format": str,
    "exclude": list,
    "jobs": int,
    "memory-limit": int,
    "require-checks": bool,
    "pass-env": list,
    "keep-cwd": bool,
}
MINIMUMS = {"jobs": 1, "memory-limit": 256}
ENTRY_KEYS: dict[str, type | str] = {
    "target": str,
    "init": dict,
    "kind": str,
    "inputs": str,
    "targets": str,
    "num-classes": int,
    "ignore-index": int,
    "ignore": list,
}
ENTRY_ENCODINGS = ("auto", "index", "onehot")


@dataclass
class Config:
    """A parsed configuration: its file (None when there is none) and the two sections, with
    values typed and paths resolved."""

    source: Path | None = None
    lint: dict = field(default_factory=dict)
    compare: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.source.parent if self.source else Path.cwd()


def find_config(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` with ``[tool.lossaudit]`` or ``lossaudit.yaml`` above ``start``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        pyproject = folder / PYPROJECT
        if pyproject.is_file() and "lossaudit" in _read_toml(pyproject).get("tool", {}):
            return pyproject
        for name in YAML_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def load_config(explicit: Path | None = None, isolated: bool = False) -> Config:
    """The configuration that applies: ``explicit``, else the nearest file, else none."""
    if isolated:
        return Config()
    path = explicit if explicit is not None else find_config()
    if path is None:
        return Config()
    if not path.exists():
        raise InputError(f"--config {path}: no such file")
    if path.name == PYPROJECT or path.suffix == ".toml":
        raw = _read_toml(path).get("tool", {}).get("lossaudit")
        if raw is None:
            raise InputError(f"{path}: no [tool.lossaudit] section")
        prefix = "[tool.lossaudit{}]"
    else:
        raw = _read_yaml(path)
        prefix = "{}"
    return _parse(path, raw, prefix)


def _read_toml(path: Path) -> dict:
    return parse_toml(read_text(path, "the configuration"), path)


def _read_yaml(path: Path) -> dict:
    data = parse_yaml(read_text(path, "the configuration"), path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with 'lint' and/or 'compare'")
    return data


def _where(path: Path, prefix: str, section: str, key: str | None = None) -> str:
    if "[" in prefix:
        table = prefix.format(f".{section}" if section else "")
        return f"{path}: {table} key '{key}'" if key else f"{path}: {table}"
    dotted = ".".join(part for part in (section, key) if part)
    return f"{path}: key '{dotted}'"


def _parse(path: Path, raw: object, prefix: str) -> Config:
    if not isinstance(raw, dict):
        raise InputError(f"{_where(path, prefix, '')}: expected a table")
    config = Config(source=path)
    for section, value in raw.items():
        if section not in ("lint", "compare"):
            raise InputError(f"{_where(path, prefix, '', section)}: unknown; expected lint or compare")
        if not isinstance(value, dict):
            raise InputError(f"{_where(path, prefix, '', section)}: expected a table")
        keys = LINT_KEYS if section == "lint" else COMPARE_KEYS
        parsed = {}
        for key, item in value.items():
            where = _where(path, prefix, section, key)
            if key not in keys:
                raise InputError(f"{where}: unknown key; known keys: {', '.join(sorted(keys))}")
            parsed[key] = _typed(item, keys[key], key, where, path.parent, section)
        setattr(config, section, parsed)
    return config


def _per_class(value: object, key: str, where: str, folder: Path) -> object:
    """A per-class hyper-parameter: a list of numbers, a comma list, or a file (relative to the
    configuration's folder), checked as on the command line."""
    if isinstance(value, str) and not _is_number_list(value) and not Path(value).is_absolute():
        value = str(folder / value)
    if not isinstance(value, (str, list)):
        raise InputError(f"{where}: expected a list of numbers or a file; got {value!r}")
    try:
        return cast(PerClassParam, PARAMS[PER_CLASS_BY_KEY[key]]).parse(value)
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


def _is_number_list(text: str) -> bool:
    try:
        [float(part) for part in text.split(",")]
    except ValueError:
        return False
    return True


def _checked(value: object, key: str, where: str) -> None:
    """A loss hyper-parameter against the constraint the registry declares for it."""
    param = PARAMS_BY_KEY.get(key)
    if param is not None:
        try:
            param.check(value)
        except InputError:
            raise InputError(f"{where}: expected {param.expected}; got {value!r}") from None


def _string_list(value: object) -> tuple[bool, Any]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    return isinstance(value, list) and all(isinstance(item, str) for item in value), value


def _number(value: object) -> tuple[bool, Any]:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok, float(cast(float, value)) if ok else value


TYPES = {
    bool: ("true or false", lambda value: (isinstance(value, bool), value)),
    int: ("an integer", lambda value: (isinstance(value, int) and not isinstance(value, bool), value)),
    float: ("a number", _number),
    list: ("a list of strings", _string_list),
    Path: ("a path", lambda value: (isinstance(value, str), value)),
    dict: ("a table", lambda value: (isinstance(value, dict), value)),
    str: ("a string", lambda value: (isinstance(value, str), value)),
}
"""Each value type of a key: its name in messages, and ``value -> (ok, value as read)``."""


def _typed(value: Any, expected: type | str, key: str, where: str, folder: Path, section: str) -> object:
    """A configuration value read as ``expected`` and checked: its choices, its minimum, a loss
    hyper-parameter's declared constraint, rule codes; paths made relative to ``folder``."""
    if expected == "per-class":
        return _per_class(value, key, where, folder)
    if expected == "losses":
        return _losses(value, where, folder)
    if expected == "loss-init":
        return _loss_init(value, where)
    if expected == "entries":
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list of targets")
        return [_entry(item, f"{where}[{index}]", folder) for index, item in enumerate(value)]
    name, read = TYPES[cast(type, expected)]
    ok, value = read(value)
    if not ok:
        raise InputError(f"{where}: expected {name}; got {value!r}")
    if expected is Path and not Path(value).is_absolute():
        value = str(folder / value)
    _check_value(value, key, where, section)
    return value


def _check_value(value: Any, key: str, where: str, section: str) -> None:
    choices = ENTRY_ENCODINGS if (section == "lint" and key == "targets") else CHOICES.get(f"{section}.{key}", CHOICES.get(key))
    if key == "label-base" and value not in (0, 1):
        raise InputError(f"{where}: expected 0 (labels 0..C-1) or 1 (labels 1..C); got {value!r}")
    if choices and value not in choices:
        raise InputError(f"{where}: expected one of {', '.join(choices)}; got {value!r}")
    if key in MINIMUMS and value < MINIMUMS[key]:
        raise InputError(f"{where}: expected at least {MINIMUMS[key]}; got {value!r}")
    if section == "compare":
        _checked(value, key, where)
    if key in ("select", "ignore"):
        from lossaudit.lint.rules import parse_codes

        parse_codes(",".join(value), where)


def _file_target(text: str, folder: Path) -> str:
    """A ``path.py:Symbol`` target of the configuration, its path made relative to the current
    folder (it is written relative to the configuration's folder); anything else as it is."""
    location, sep, symbol = text.rpartition(":")
    if sep and (location.endswith(".py") or "/" in location) and not Path(location).is_absolute():
        return f"{relative_to_cwd(folder / location)}:{symbol}"
    return text


def _losses(value: Any, where: str, folder: Path) -> list:
    """``losses``: loss ids and user losses (``path.py:fn`` relative to the file's folder)."""
    ok, value = _string_list(value)
    if not ok:
        raise InputError(f"{where}: expected a list of strings; got {value!r}")
    return [_file_target(item, folder) for item in value]


def _loss_init(value: object, where: str) -> object:
    """``loss-init``: a table ``{NAME = {KEY = VALUE}}`` or a list of ``NAME.KEY=VALUE``."""
    from lossaudit.losses.user import parse_loss_init

    ok, _ = _string_list(value)
    if not ok and not isinstance(value, dict):
        raise InputError(f"{where}: expected a table {{NAME = {{KEY = VALUE}}}} or a list of NAME.KEY=VALUE; got {value!r}")
    try:
        return parse_loss_init(value if isinstance(value, dict) else _string_list(value)[1])
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


def _entry(item: object, where: str, folder: Path) -> dict:
    """A lint target entry: a string, or a table with ``target`` and per-target options. A file
    target is made relative to the current folder; ``root`` (the file's folder) is where a module
    target is imported from."""
    if isinstance(item, str):
        item = {"target": item}
    if not isinstance(item, dict) or "target" not in item:
        raise InputError(f"{where}: expected a target string or a table with 'target'")
    entry: dict[str, Any] = {}
    for key, value in item.items():
        if key not in ENTRY_KEYS:
            raise InputError(f"{where}: unknown key '{key}'; known keys: {', '.join(sorted(ENTRY_KEYS))}")
        entry[key] = _typed(value, ENTRY_KEYS[key], key if key != "targets" else "entry-targets", f"{where}.{key}", folder, "entry")
    if entry.get("targets") not in (None, *ENTRY_ENCODINGS):
        raise InputError(f"{where}.targets: expected one of {', '.join(ENTRY_ENCODINGS)}; got {entry['targets']!r}")
    entry["target"] = _file_target(entry["target"], folder)
    entry["root"] = folder
    _check_exists(entry, where)
    return entry


def _check_exists(entry: dict, where: str) -> None:
    """A file target's file must define its symbol, a module target's module must exist; neither
    is imported."""
    try:
        spec = parse_target(entry["target"], root=entry["root"])
        if spec.module is not None:
            module_source(spec.module, spec.root)
    except InputError as error:
        raise InputError(f"{where}: {error}") from None
