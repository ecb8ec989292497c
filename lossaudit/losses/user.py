"""A user's own loss in ``compare``: ``--losses focal,my_focal.py:sigmoid_focal_loss``, a
``package.module:MyLoss``, an installed package's entry point (group :data:`ENTRY_POINT_GROUP`),
or a callable given to :func:`lossaudit.compare`.

This module only parses and names them: nothing here imports the user's code or torch. The code
is imported and run by :mod:`lossaudit.compare.engine.user`, in a child process, and only for the
losses named.

A text entry may end in ``@sigmoid`` or ``@softmax`` to declare the loss's family (else it is
inferred as ``lint`` infers a kind); the loss's id in the report is the text without it. A
callable (or a module's symbol) may declare the same with the attributes ``lossaudit_family``
(``"sigmoid"`` or ``"softmax"``) and ``lossaudit_targets`` (``"index"``: it takes int64 class
indices ``(n,)``; ``"onehot"``: float targets ``(n, C)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lossaudit.errors import InputError
from lossaudit.io.symbols import TargetSpec, parse_init, parse_target
from lossaudit.losses.spec import SIGMOID, SOFTMAX

ENTRY_POINT_GROUP = "lossaudit.losses"
"""The entry-point group through which installed packages offer losses: ``name = "pkg.mod:fn"``."""
FAMILIES = (SIGMOID, SOFTMAX)


@dataclass(frozen=True)
class UserLoss:
    """One user loss ``compare`` computes.

    Attributes:
        id: its name in the report: the text as given without ``@family``, an entry point's name,
            or a callable's ``__name__``.
        source: where it comes from, as the report says it: ``"file"``, ``"module"``,
            ``"entry point"`` (with its distribution) or ``"callable"``.
        target: what to import (None for a callable).
        obj: the callable itself (API), else None.
        family: :data:`~lossaudit.losses.spec.SIGMOID` or :data:`~lossaudit.losses.spec.SOFTMAX`
            when declared (or once inferred by the child), else None.
        init: keyword arguments of its constructor (a class) or of every call (a function),
            from ``--loss-init NAME.KEY=VALUE``.
        names: the names ``--loss-init`` may give it (its id, its symbol, its entry point).
    """

    id: str
    source: str
    target: TargetSpec | None = None
    obj: object = None
    family: str | None = None
    init: dict = field(default_factory=dict)
    names: tuple[str, ...] = ()
    targets: str | None = None
    """``"index"`` or ``"onehot"`` once known (declared or found by the child)."""

    def to_report(self) -> dict:
        """What the report says of it beside its numbers."""
        return {"kind": "user", "from": self.source, "target": self.target.text if self.target else self.id, "targets": self.targets}


def entry_points() -> dict:
    """The installed packages' losses: entry-point name -> ``importlib.metadata.EntryPoint``
    (listed from the distributions' metadata; nothing is imported)."""
    from importlib.metadata import entry_points as found

    return {point.name: point for point in found(group=ENTRY_POINT_GROUP)}


def _split_family(text: str) -> tuple[str, str | None]:
    name, sep, family = text.rpartition("@")
    if not sep or any(mark in family for mark in ":/\\."):
        return text, None
    if family not in FAMILIES:
        raise InputError(f"--losses {text}: unknown family {family!r} after '@'; expected @sigmoid or @softmax")
    return name, family


def parse_user_loss(text: str, points: dict | None = None) -> UserLoss | None:
    """The user loss ``text`` names (``path.py:fn``, ``pkg.mod:Class``, an entry point, each
    optionally ``@sigmoid``/``@softmax``), or None when it names none (an unknown name).

    Raises:
        InputError: a target that cannot be one (no such file, no such top-level symbol).
    """
    name, family = _split_family(text)
    if ":" in name:
        target = parse_target(name)
        return UserLoss(id=name, source="file" if target.file else "module", target=target, family=family, names=(name, target.symbol))
    points = entry_points() if points is None else points
    if name in points:
        point = points[name]
        module, _, symbol = point.value.partition(":")
        target = TargetSpec(text=point.value, symbol=symbol.strip(), module=module.strip())
        dist = getattr(point, "dist", None)
        source = f"entry point of {dist.name}" if dist is not None else "entry point"
        return UserLoss(id=name, source=source, target=target, family=family, names=(name, target.symbol))
    return None


def from_callable(obj: object) -> UserLoss:
    """A callable given to :func:`lossaudit.compare` in ``losses``: a function, a class, or an
    instance (an ``nn.Module``)."""
    if not callable(obj):
        raise InputError(f"losses: {obj!r} is neither a loss name nor a callable")
    name = getattr(obj, "__name__", None) or type(obj).__name__
    family = getattr(obj, "lossaudit_family", None)
    if family is not None and family not in FAMILIES:
        raise InputError(f"losses: {name}.lossaudit_family = {family!r}; expected 'sigmoid' or 'softmax'")
    return UserLoss(id=name, source="callable", obj=obj, family=family, names=(name,))


def parse_loss_init(items: list[str] | dict | None) -> dict[str, dict]:
    """``["my_loss.alpha=0.5", "MyLoss.gamma=1"]`` (or ``{NAME: {KEY: VALUE}}``, the
    configuration's table and the API's mapping) -> ``{NAME: {KEY: VALUE}}``. NAME is a user
    loss's id, its symbol or its entry point's name; values are Python literals as for ``--init``."""
    if isinstance(items, dict):
        for name, values in items.items():
            if not isinstance(values, dict):
                raise InputError(f"loss-init {name!r}: expected a table of keyword arguments; got {values!r}")
        return {str(name): dict(values) for name, values in items.items()}
    parsed: dict[str, dict] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        name, dot, keyword = key.rpartition(".")
        if not sep or not dot or not name:
            raise InputError(f"--loss-init {item!r}: expected NAME.KEY=VALUE, NAME a user loss of --losses")
        parsed.setdefault(name.strip(), {}).update(parse_init([f"{keyword}={value}"], option="--loss-init"))
    return parsed


def with_init(users: tuple[UserLoss, ...], init: dict[str, dict]) -> tuple[UserLoss, ...]:
    """``users`` with the keyword arguments ``init`` gives each (by any of its names).

    Raises:
        InputError: a NAME that is none of the user losses.
    """
    from dataclasses import replace

    unknown = [name for name in init if not any(name in user.names for user in users)]
    if unknown:
        known = ", ".join(user.id for user in users) or "none"
        raise InputError(f"--loss-init {unknown[0]}: no user loss of that name among --losses (user losses: {known})")
    return tuple(replace(user, init={**user.init, **{k: v for name in user.names if name in init for k, v in init[name].items()}}) for user in users)


def split_losses(losses: str | Sequence[object] | None, init: list[str] | dict | None = None) -> tuple[tuple[str, ...] | None, tuple[UserLoss, ...]]:
    """``--losses`` (a comma list) or the API's ``losses`` (names and callables) -> the loss ids
    in the order given (None: the defaults) and the user losses among them, with their
    ``--loss-init`` keywords (``init``). Entry points are listed only when a name is no registry
    loss; nothing is imported.

    Raises:
        InputError: an unknown name, no loss, a user loss whose id is a registry loss's or
            another user loss's, or a ``--loss-init`` NAME that is no user loss.
    """
    from lossaudit.losses.registry import LOSS_IDS, LOSSES

    if losses is None:
        if init:
            raise InputError("--loss-init goes with a user loss in --losses")
        return None, ()
    items = losses.split(",") if isinstance(losses, str) else list(losses)
    ids: list[str] = []
    users: list[UserLoss] = []
    points = None
    for item in items:
        if isinstance(item, str):
            name = item.strip()
            if not name or name in ids:
                continue
            if name in LOSSES:
                ids.append(name)
                continue
            points = entry_points() if points is None else points
            user = parse_user_loss(name, points)
            if user is None:
                offered = f"; installed ({ENTRY_POINT_GROUP}): {', '.join(points)}" if points else ""
                raise InputError(
                    f"--losses: unknown loss {name}; expected a comma list of {', '.join(LOSS_IDS)}, "
                    f"path/to/file.py:function, package.module:Class or an installed loss{offered}"
                )
        else:
            user = from_callable(item)
        if user.id in LOSSES or user.id in ids:
            raise InputError(f"--losses: two losses are named {user.id!r} (a user loss takes the name of its target, entry point or function)")
        ids.append(user.id)
        users.append(user)
    if not ids:
        raise InputError(f"--losses: unknown loss (none); expected a comma list of {', '.join(LOSS_IDS)}")
    return tuple(ids), with_init(tuple(users), parse_loss_init(init))
