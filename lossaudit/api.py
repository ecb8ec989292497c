"""lossaudit as a library: :func:`compare`, :func:`sweep` and :func:`lint`, with the command line's
options as keyword arguments and the same defaults. The CLI calls these functions; notebooks and
test suites call them directly (``lossaudit.compare``, ``lossaudit.sweep``, ``lossaudit.lint``).

Errors a user can act on are :class:`lossaudit.errors.InputError`, with the one-line message
the CLI prints.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from lossaudit.compare.report.types import Report
from lossaudit.losses.spec import Param

if TYPE_CHECKING:
    from lossaudit.compare.settings import LossSettings
    from lossaudit.lint.findings import LintReport
    from lossaudit.sweep.report import SweepReport

_F = TypeVar("_F", bound=Callable[..., Any])


def compare(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    logits: object = None,
    targets: object = None,
    mask: object = None,
    weights: object = None,
    class_names: Sequence[str] | str | os.PathLike[str] | None = None,
    losses: Sequence[str | Callable[..., Any]] | str | None = None,
    loss_init: dict[str, Any] | list[str] | None = None,
    timeout: float = 10.0,
    memory_limit_mb: int | None = None,
    bins: int = 10,
    logits_key: str | None = None,
    targets_key: str | None = None,
    targets_encoding: str = "auto",
    background_index: int | None = None,
    ignore_index: int = -1,
    class_dim: int | None = None,
    inputs: str = "auto",
    label_base: int = 0,
    model: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    arch: str | None = None,
    init: dict[str, Any] | None = None,
    trust_model: bool = False,
    inputs_key: str | None = None,
    output_key: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    save_logits: str | os.PathLike[str] | None = None,
    baseline: str | os.PathLike[str] | None = None,
    **hyper_parameters: Any,
) -> Report:
    """Compare cross-entropy, focal, softmax focal, GHM-C and related losses on predictions.

    Give dumps (``paths``: ``.npz``/``.npy``/``.pt`` files or folders, as ``lossaudit compare``
    reads them), arrays (``logits=`` ``(N, C)``, ``(B, A, C)`` or ``(B, C, H, W)`` with
    ``targets=`` class indices or one-hot/soft targets shaped like the logits; numpy arrays or
    torch tensors; ``weights=``, optional, sampling weights ``1/probability >= 1`` shaped like the
    rows or like the logits, as a weighted dump's ``weights`` key: every sum is then a
    Horvitz–Thompson estimate), or a checkpoint (``model=`` with ``data=``). Every other keyword is the
    command-line option of the same name (``targets_encoding`` is ``--targets``), with the same
    default; the losses' hyper-parameters (``alpha``, ``gamma``, ``alpha_per_class``,
    ``ghm_bins``, ``qfl_beta``, ... : ``lossaudit losses`` lists them) are keywords too, checked
    against the constraints the registry declares (:data:`lossaudit.losses.registry.PARAMS`). ``losses`` None means the defaults (``ce, bce, focal, softmax-focal, ghm``, plus
    ``centernet`` for heatmaps, ``qfl`` and ``vfl`` for soft targets, ``asl`` for multi-label
    targets: :func:`lossaudit.compare.default_losses`). ``losses`` may name your own losses beside
    them — ``"path/to/file.py:fn"``, ``"package.module:Class"``, an installed package's entry
    point (group ``lossaudit.losses``), each optionally ending ``@sigmoid``/``@softmax`` — or be
    the callables themselves; ``loss_init`` gives them keyword arguments (``{NAME: {KEY: VALUE}}``,
    ``--loss-init``), and they run in a child process, each call under ``timeout`` seconds and the
    process under ``memory_limit_mb`` MiB (README "Your own loss in compare"). ``baseline``: a previous report's JSON file; the changes since
    it are the report's ``extra["baseline"]`` section (README "Tracking runs").

    Returns:
        The :class:`~lossaudit.compare.report.types.Report`; ``report.to_dict()`` is ``--format json``'s document.

    Raises:
        InputError: bad input, with the message the CLI prints.

    Example:
        >>> import numpy as np, lossaudit
        >>> logits = np.array([[2.0, -1.0], [-1.0, 3.0], [0.5, 0.5]], dtype=np.float32)
        >>> report = lossaudit.compare(logits=logits, targets=np.array([0, 1, 0]), losses=["ce"])
        >>> report.input["rows"], round(report.losses["ce"].mean, 4)  # (log(1+e^-3) + log(1+e^-4) + log 2) / 3
        (3, 0.2533)
    """
    from lossaudit import compare as comparison
    from lossaudit.errors import InputError
    from lossaudit.io.dataset import LoadOptions, read_class_names
    from lossaudit.losses.user import split_losses

    arrays = _arrays(logits, targets, mask, weights)
    names = (
        read_class_names(Path(class_names)) if isinstance(class_names, (str, os.PathLike)) else None if class_names is None else [str(n) for n in class_names]
    )
    load_options = LoadOptions(
        logits_key=logits_key,
        targets_key=targets_key,
        targets=targets_encoding,
        background_index=background_index,
        ignore_index=ignore_index,
        class_dim=class_dim,
        inputs=inputs,
        class_names=names,
        label_base=label_base,
    )
    settings = _settings(bins, hyper_parameters)
    source = None
    if model is not None:
        from lossaudit.model.inference import RunOptions

        if data is None:
            raise InputError("--model needs --data: a .npz/.pt file with the model input and the targets")
        run_options = RunOptions(data=Path(data), inputs_key=inputs_key, targets_key=targets_key, output_key=output_key, batch_size=batch_size, device=device)
        source = comparison.ModelSource(
            Path(model), run_options, arch=arch, init=dict(init or {}), trust=trust_model, save_logits=Path(save_logits) if save_logits is not None else None
        )
    elif any(value is not None for value in (data, arch, init, save_logits)):
        raise InputError("--data, --arch, --init and --save-logits go with --model")
    path_list = [] if paths is None else [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(path) for path in paths]
    chosen, users = split_losses(losses, loss_init)
    if not timeout > 0 or (memory_limit_mb is not None and memory_limit_mb < 256):
        raise InputError(f"timeout {timeout!r}, memory_limit_mb {memory_limit_mb!r}: expected seconds > 0 and at least 256 MiB")
    if users:
        from dataclasses import replace

        settings = replace(settings, user_losses=users)
    document = comparison.run(path_list, load_options, settings, chosen, source, arrays=arrays, timeout=timeout, memory_limit_mb=memory_limit_mb)
    if baseline is not None:
        from lossaudit.compare.report.baseline import changes, read_report

        document["baseline"] = changes(document, read_report(Path(baseline)), str(baseline))
    return Report.from_dict(document)


def _arrays(logits: object, targets: object, mask: object, weights: object = None) -> dict[str, Any] | None:
    """``logits=``, ``targets=`` (and ``mask=``, ``weights=``) as numpy arrays, or None when not given."""
    from lossaudit.errors import InputError
    from lossaudit.io.dataset.options import MASK_KEY, WEIGHTS_KEY
    from lossaudit.io.dump import from_tensor

    if (logits is None) != (targets is None):
        raise InputError("logits= and targets= go together")
    if logits is None:
        if weights is not None:
            raise InputError("weights= goes with logits= and targets= (a dump holds its weights under the key 'weights')")
        return None
    arrays = {"logits": from_tensor(logits), "targets": from_tensor(targets)}
    for key, value in ((MASK_KEY, mask), (WEIGHTS_KEY, weights)):
        if value is not None:
            arrays[key] = from_tensor(value)
    return arrays


def _settings(bins: int, hyper_parameters: dict[str, Any]) -> LossSettings:
    """The :class:`~lossaudit.compare.settings.LossSettings` of the keywords, each hyper-parameter
    checked against its declared constraint (unknown keywords named)."""
    from lossaudit.compare.settings import LossSettings
    from lossaudit.errors import InputError
    from lossaudit.losses.registry import PARAMS

    unknown = sorted(set(hyper_parameters) - set(PARAMS))
    if unknown:
        raise InputError(f"compare() got an unknown keyword {unknown[0]!r}; the losses' hyper-parameters are {', '.join(PARAMS)}")
    per_class = {
        name: param.parse(hyper_parameters[name]) for name, param in PARAMS.items() if not isinstance(param, Param) and hyper_parameters.get(name) is not None
    }
    return LossSettings(bins=bins, **{**hyper_parameters, **per_class})


def _show_hyper_parameters(function: _F) -> _F:
    """``function``'s signature with the registry's hyper-parameters in place of
    ``**hyper_parameters``, for ``help()`` and editors."""
    from lossaudit.losses.registry import PARAMS

    signature = inspect.signature(function)
    params = [param for param in signature.parameters.values() if param.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=param.default) for name, param in PARAMS.items()]
    function.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return function


compare = _show_hyper_parameters(compare)


def sweep(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    logits: object = None,
    targets: object = None,
    mask: object = None,
    weights: object = None,
    loss: str = "auto",
    gamma: Sequence[float] | str = (0, 0.5, 1, 2, 5),
    alpha: Sequence[float] | str | None = None,
    alpha_per_class: Sequence[Sequence[float] | str] = (),
    bins: int = 10,
    class_names: Sequence[str] | str | os.PathLike[str] | None = None,
    logits_key: str | None = None,
    targets_key: str | None = None,
    targets_encoding: str = "auto",
    background_index: int | None = None,
    ignore_index: int = -1,
    class_dim: int | None = None,
    inputs: str = "auto",
    label_base: int = 0,
) -> SweepReport:
    """A focal loss under every setting of a grid, from one pass over the data (``lossaudit sweep``).

    Give dumps (``paths``) or arrays (``logits=``, ``targets=``, optional ``mask=`` and sampling
    ``weights=``, as :func:`compare` takes them). ``gamma``, ``alpha`` (None: 0.25, 0.5, 0.75 and
    -1, no weighting) and each ``alpha_per_class`` vector are the grid, as numbers or as the
    command line's comma lists; ``loss`` is ``focal``, ``softmax-focal`` or ``auto`` (the one that
    fits the data). Every other keyword is the command-line option of the same name.

    Returns:
        A :class:`~lossaudit.sweep.report.SweepReport`: ``print(report)`` for the text report,
        ``report.to_dict()`` for ``--format json``'s document.

    Raises:
        InputError: bad input, with the message the CLI prints.

    Example:
        >>> import numpy as np, lossaudit
        >>> logits = np.array([[2.0, -1.0], [-1.0, 3.0], [0.5, 0.5]], dtype=np.float32)
        >>> report = lossaudit.sweep(logits=logits, targets=np.array([0, 1, 2]), loss="focal", gamma=[0, 2], alpha=[0.25])
        >>> tuple((setting["gamma"], setting["alpha"]) for setting in report.settings)
        ((0.0, 0.25), (2.0, 0.25))
    """
    from lossaudit.io.dataset import LoadOptions, read_class_names
    from lossaudit.sweep.report import SweepReport
    from lossaudit.sweep.run import run

    def listed(values: Sequence[object] | str | None) -> str | None:
        return (
            values
            if values is None or isinstance(values, str)
            else ",".join(f"{value:g}" if isinstance(value, (int, float)) else str(value) for value in values)
        )

    names = (
        read_class_names(Path(class_names)) if isinstance(class_names, (str, os.PathLike)) else None if class_names is None else [str(n) for n in class_names]
    )
    load_options = LoadOptions(
        logits_key=logits_key,
        targets_key=targets_key,
        targets=targets_encoding,
        background_index=background_index,
        ignore_index=ignore_index,
        class_dim=class_dim,
        inputs=inputs,
        class_names=names,
        label_base=label_base,
    )
    path_list = [] if paths is None else [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(path) for path in paths]
    vectors = [listed(vector) for vector in alpha_per_class]
    document = run(path_list, load_options, cast(str, listed(gamma)), listed(alpha), bins, loss, vectors, arrays=_arrays(logits, targets, mask, weights))
    return SweepReport(document)


def lint(
    target: Any,
    *,
    kind: str = "auto",
    init: dict[str, Any] | None = None,
    inputs: str = "auto",
    targets: str = "auto",
    num_classes: int | None = None,
    ignore_index: int | None = None,
    select: Sequence[str] | str | None = None,
    ignore: Sequence[str] | str | None = None,
    seed: int = 0,
    timeout: float = 10.0,
    memory_limit_mb: int | None = None,
) -> LintReport:
    """Audit a focal-loss implementation against the reference losses.

    ``target`` is what ``lossaudit lint`` takes — ``"path/to/file.py:Symbol"`` or
    ``"package.module:Symbol"``, audited in a child process with a time and memory limit — or
    the object itself: a class, a function, or an instance (a module called as
    ``loss(inputs, targets)``), audited in this process. The keywords are the command-line
    options; ``select``/``ignore`` are rule codes or prefixes (``"FL01"``).

    Returns:
        A :class:`~lossaudit.lint.findings.LintReport`: ``findings`` (code, name, severity,
        message, path, line, evidence, fix), ``unchecked`` (the checks that could not run, with
        the reason), ``ok(fail_on="error", require_checks=False)``, ``to_dict()``.

    Example:
        >>> import lossaudit
        >>> report = lossaudit.lint("lossaudit.losses:focal")
        >>> report.ok(), report.findings
        (True, ())
    """
    from lossaudit.lint.findings import LintReport
    from lossaudit.lint.rules import parse_codes
    from lossaudit.lint.runner import AuditOptions

    options = AuditOptions(
        kind=kind,
        inputs=inputs,
        targets=targets,
        num_classes=num_classes,
        ignore_index=ignore_index,
        seed=seed,
        timeout=timeout,
        memory_limit_mb=memory_limit_mb,
    )

    def codes(value: Sequence[str] | str | None, option: str) -> frozenset[str]:
        return parse_codes(value if value is None or isinstance(value, str) else ",".join(value), option)

    chosen, skipped = codes(select, "select"), codes(ignore, "ignore")
    if isinstance(target, str):
        from lossaudit.errors import InputError
        from lossaudit.lint import session

        settings = session.LintSettings(audit=options, init=dict(init or {}), select=chosen, ignore=skipped)
        plan = session.plan([target], [], settings)
        results = session.run(plan.targets, settings)
        stopping = session.stopping_errors(plan.targets, results)
        if stopping:
            raise InputError(stopping[0])
        if not results:
            raise InputError(f"{target}: no loss to audit ({'; '.join(plan.notices) or 'nothing found'})")
    else:
        from lossaudit.lint.findings import fill_unchecked, filter_unchecked
        from lossaudit.lint.worker import audit_object

        result = fill_unchecked(audit_object(target, getattr(target, "__qualname__", type(target).__qualname__), dict(init or {}), options))
        keep: Callable[[str], bool] = lambda code: (not chosen or code in chosen) and code not in skipped  # noqa: E731
        result.findings = [f for f in result.findings if keep(f.code)]
        filter_unchecked(result, keep)
        results = [result]
    return LintReport(tuple(results))
