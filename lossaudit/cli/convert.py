"""Option and argument values, converted from the command line's strings without a validation library.

Typer converts each value through a pydantic validator that it builds, for every parameter of the
command run, given or not: ~0.1 s and pydantic's import in every process. lossaudit's parameters
are of a few types only (``bool``, ``int``, ``float``, ``str``, ``Path``, an ``Enum`` of choices,
and lists of ``str`` or ``Path``, each optional), so :func:`converter` converts them itself, with
Typer's bounds (``min=``/``max=``), and refuses a value in lossaudit's words: ``--top 0: expected
at least 1`` (:class:`ValueRefused`, said by :func:`lossaudit.cli.app.usage_message`).

A converter stands in for Typer's runtime parameter (``get_runtime_param``): it takes the value
click parsed (a string, a tuple of them for a repeatable option, or the declared default) and
returns what the command receives.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

from typer import BadParameter


class ValueRefused(BadParameter):
    """A value the parameter's type or bounds refuse; ``said`` is lossaudit's phrase for why
    ("expected an integer"), ``value`` the value as given."""

    def __init__(self, said: str, value: object, ctx: Any, param: Any) -> None:
        super().__init__(said, ctx=ctx, param=param)
        self.said = said
        self.value = value


class Converter:
    """How one parameter's value is converted: ``kind`` is its element type (``int``, ``Path``, an
    Enum...), ``low``/``high`` Typer's ``min``/``max``; a repeatable option or a variadic argument
    converts each element and gives a tuple (``()`` when absent), as Typer's does."""

    def __init__(self, kind: Any, low: float | None, high: float | None) -> None:
        if kind not in _PARSE and not (isinstance(kind, type) and issubclass(kind, Enum)):
            raise TypeError(f"lossaudit.cli.convert: no conversion for {kind!r}")
        self.kind = kind
        self.low = low
        self.high = high

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        """Typer's runtime-parameter interface: ``value`` as click parsed it, ``param`` the parameter."""
        many = param.multiple or param.nargs == -1
        if value is None:
            return () if many else None
        if many:
            return tuple(self.one(item, param, ctx) for item in value)
        return self.one(value, param, ctx)

    def one(self, value: Any, param: Any, ctx: Any) -> Any:
        """One element: of the kind already (a default), or parsed from its string."""
        if isinstance(value, self.kind) and not (self.kind is int and isinstance(value, bool)):
            converted = value
        elif isinstance(self.kind, type) and issubclass(self.kind, Enum):
            converted = next((member for member in self.kind if str(member.value) == str(value)), None)
            if converted is None:
                raise ValueRefused(f"expected one of {', '.join(str(member.value) for member in self.kind)}", value, ctx, param)
        else:
            parse, said = _PARSE[self.kind]
            try:
                converted = parse(value)
            except (KeyError, TypeError, ValueError):
                raise ValueRefused(said, value, ctx, param) from None
        if self.low is not None and converted < self.low:
            raise ValueRefused(f"expected at least {self.low}", value, ctx, param)
        if self.high is not None and converted > self.high:
            raise ValueRefused(f"expected at most {self.high}", value, ctx, param)
        return converted


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


_PARSE: dict[Any, tuple[Any, str]] = {
    bool: (lambda value: _BOOLS[str(value).strip().lower()], "expected true or false"),
    int: (lambda value: int(str(value).strip()), "expected an integer"),
    float: (lambda value: float(str(value).strip()), "expected a number"),
    str: (str, "expected text"),
    Path: (lambda value: Path(value), "expected a path"),
}
"""Each element type: how its string is parsed, and what a value it refuses was expected to be."""


def converter(param: Any) -> Converter:
    """The converter of a Typer parameter, from its declared annotation (``Optional`` already
    removed by Typer; ``list[X]`` converts each ``X``) and its ``min``/``max``.

    Raises:
        TypeError: an annotation lossaudit has no conversion for (a new option's type: add it to
            ``_PARSE``).
    """
    descriptor = param.type_descriptor
    kind = descriptor.annotation
    if get_origin(kind) is list:
        (kind,) = get_args(kind)
    info = descriptor.parameter_info
    return Converter(kind, info.min, info.max)
