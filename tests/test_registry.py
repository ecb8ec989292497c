"""The loss registry is the one place a loss is declared: every entry path (API, command line,
configuration file) takes its parameters and enforces their constraints alike, the docs' tables
(docs/losses.md) are the registry's, and the listing covers every loss."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import lossaudit
from lossaudit.errors import InputError
from lossaudit.losses.registry import LINT_KINDS, LOSSES, PARAMS
from lossaudit.losses.spec import Param
from tests.conftest import write_npz

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)

ROOT = Path(__file__).resolve().parent.parent
LOSSES_PAGE = (ROOT / "docs" / "losses.md").read_text()


def _bad_values(param: Param) -> list[float]:
    """Values the declared bounds refuse: NaN and ±inf always (unless one is the 'off' value), one
    below the lower bound, one above the upper bound, the upper bound itself when it is open."""
    bounds = param.bounds
    if param.integer:  # the command line and the file refuse a non-integer by its type
        return [int(bounds.low) - 1]
    values = [math.nan, math.inf, -math.inf]
    if bounds.low is not None:
        values.append(float(bounds.low - 1 if bounds.off != bounds.low - 1 else bounds.low - 0.5))
    if bounds.high is not None:
        values.append(float(bounds.high + 1))
        if bounds.high_open:
            values.append(float(bounds.high))
    return [value for value in values if value != bounds.off]


SCALARS = [param for param in PARAMS.values() if isinstance(param, Param)]
CASES = [(param, value) for param in SCALARS for value in _bad_values(param)]


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("registry")
    logits = np.array([[2.0, -1.0, 0.5], [-1.0, 3.0, 0.0], [0.5, 0.5, -2.0], [0.0, 1.0, 2.0]], dtype=np.float32)
    return write_npz(folder / "d.npz", logits=logits, targets=np.array([0, 1, 2, 1]))


def _cli_error(result) -> str:
    assert result.exit_code == 2, result.stdout
    (line,) = result.stderr.strip().splitlines()
    return line.removeprefix("lossaudit: error: ")


@pytest.mark.parametrize(("param", "value"), CASES, ids=[f"{param.name}={value}" for param, value in CASES])
def test_every_constraint_is_enforced_on_every_path(param, value, dump, run_cli, tmp_path):
    """API, command line and configuration file refuse the same value with the same words."""
    with pytest.raises(InputError) as raised:
        lossaudit.compare(dump, **{param.name: value})
    message = str(raised.value)
    assert message == f"{param.option} {value}: expected {param.expected}"
    assert _cli_error(run_cli("compare", dump, "--isolated", param.option, str(value))) == message

    config = tmp_path / "pyproject.toml"
    toml_value = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    config.write_text(f"[tool.lossaudit.compare]\n{param.key} = {toml_value}\n")
    error = _cli_error(run_cli("compare", dump, "--config", config))
    assert error.startswith(f"{config}: [tool.lossaudit.compare] key '{param.key}': expected {param.expected}; got"), error


@pytest.mark.parametrize("param", SCALARS, ids=[param.name for param in SCALARS])
def test_the_default_and_an_edge_value_pass_every_path(param, dump, run_cli, tmp_path):
    """The default, and the lower bound (a boundary the constraint includes), are accepted."""
    edge = param.bounds.low if param.bounds.low is not None else param.default
    for value in {param.default, edge}:
        assert lossaudit.compare(dump, **{param.name: value}).input["rows"] == 4
        assert run_cli("compare", dump, "--isolated", param.option, str(value), "--format", "json").exit_code == 0


def test_the_constraints_read_as_documented():
    """Hand-written: the words of the constraints users meet most."""
    assert PARAMS["alpha"].expected == "a value in [0, 1], or -1 to disable it"
    assert PARAMS["gamma"].expected == "a finite value ≥ 0"
    assert PARAMS["ghm_bins"].expected == "at least 1"
    assert PARAMS["asl_clip"].expected == "a value in [0, 1)"
    assert PARAMS["la_tau"].expected == "a finite value"


@pytest.mark.parametrize(("values", "bad"), [([2.0, -1.0, 0.5], "2"), ([math.nan, 0.5, 0.5], "nan"), ([0.25, math.inf, 0.5], "inf")])
def test_per_class_alpha_is_checked_on_every_path(values, bad, dump, run_cli, tmp_path):
    """The API raised nothing for [2.0, -1.0] (a focal mean from negative weights) or [nan, 0.5]
    (NaN means); now each path refuses them with one message."""
    shown = ",".join(f"{value:g}" for value in values)
    expected = f"--alpha-per-class {shown}: expected one number per class, each a value in [0, 1]; got {bad}"
    with pytest.raises(InputError, match=re.escape(expected)):
        lossaudit.compare(dump, alpha_per_class=values)
    assert _cli_error(run_cli("compare", dump, "--isolated", "--alpha-per-class", shown)) == expected
    listed = tmp_path / "alpha.txt"
    listed.write_text("\n".join(str(value) for value in values) + "\n")
    assert _cli_error(run_cli("compare", dump, "--isolated", "--alpha-per-class", listed)) == f"{listed}: {expected}"
    config = tmp_path / "pyproject.toml"
    config.write_text(
        f"[tool.lossaudit.compare]\nalpha-per-class = [{', '.join('nan' if math.isnan(v) else 'inf' if math.isinf(v) else repr(v) for v in values)}]\n"
    )
    assert _cli_error(run_cli("compare", dump, "--config", config)) == f"{config}: [tool.lossaudit.compare] key 'alpha-per-class': {expected}"
    assert _cli_error(run_cli("explain", "--logits", "1,2,3", "--target", "0", "--alpha-per-class", shown)) == expected


def test_per_class_alpha_has_one_syntax(dump, run_cli, tmp_path):
    """A comma list, a file, a configuration list and an API sequence give the same report; the
    count must be the number of classes."""
    listed = tmp_path / "alpha.yaml"
    listed.write_text("[0.25, 0.5, 0.75]\n")
    reports = [
        lossaudit.compare(dump, losses=["softmax-focal"], alpha_per_class=[0.25, 0.5, 0.75]).to_dict(),
        lossaudit.compare(dump, losses=["softmax-focal"], alpha_per_class="0.25,0.5,0.75").to_dict(),
        json.loads(run_cli("compare", dump, "--isolated", "--losses", "softmax-focal", "--alpha-per-class", listed, "--format", "json").stdout),
    ]
    assert reports[0]["losses"]["softmax-focal"] == reports[1]["losses"]["softmax-focal"] == reports[2]["losses"]["softmax-focal"]
    assert reports[0]["losses"]["softmax-focal"]["params"]["alpha"] == [0.25, 0.5, 0.75]
    with pytest.raises(InputError, match=r"--alpha-per-class: 2 values; the data has 3 classes"):
        lossaudit.compare(dump, alpha_per_class=[0.25, 0.5])


def test_an_unknown_hyper_parameter_is_named():
    with pytest.raises(InputError, match=r"unknown keyword 'gama'"):
        lossaudit.compare(logits=np.zeros((2, 2), np.float32), targets=np.array([0, 1]), gama=2.0)


def test_the_docs_tables_are_the_registrys(run_cli):
    """docs/losses.md's "Losses and their parameters" is `lossaudit losses --format markdown`."""
    block = re.search(r"<!-- losses:start -->\n(.*?)<!-- losses:end -->", LOSSES_PAGE, flags=re.S)
    assert block, "docs/losses.md has no generated loss tables"
    result = run_cli("losses", "--format", "markdown")
    assert result.exit_code == 0
    assert block.group(1) == result.stdout, "docs/losses.md's loss tables are stale: paste `lossaudit losses --format markdown` between the markers"


def test_the_listing_covers_every_loss_parameter_and_kind(run_cli):
    listing = json.loads(run_cli("losses", "--format", "json").stdout)
    assert [loss["id"] for loss in listing["losses"]] == list(LOSSES)
    assert [param["keyword"] for param in listing["parameters"]] == list(PARAMS)
    assert [kind["kind"] for kind in listing["lint_kinds"]] == list(LINT_KINDS)
    focal = next(loss for loss in listing["losses"] if loss["id"] == "focal")
    assert focal["parameters"] == ["alpha", "gamma", "alpha_per_class"] and focal["default"] == "always"
    text = run_cli("losses").stdout
    assert "--qfl-beta B  default 2; a finite value ≥ 0" in text


def test_every_parameter_is_a_compare_option_an_api_keyword_and_a_configuration_key(run_cli):
    import inspect

    from lossaudit.api import compare
    from lossaudit.io.config import COMPARE_KEYS

    help_text = run_cli("compare", "--help").stdout
    keywords = inspect.signature(compare).parameters
    for name, param in PARAMS.items():
        assert param.option in help_text
        assert name in keywords and keywords[name].default == param.default
        assert param.key in COMPARE_KEYS


def _declaring_modules() -> dict[str, str]:
    """Each registered loss id (and each lint kind named after a loss) -> the file of the family
    module that declares it."""
    from lossaudit.losses.registry import FAMILIES
    from lossaudit.losses.spec import SIGMOID, SOFTMAX

    owners = {}
    for module in FAMILIES:
        names = [spec.id for spec in getattr(module, "LOSSES", ())] + [kind.name for kind in getattr(module, "LINT_KINDS", ())]
        for name in names:
            owners.setdefault(name, module.__file__)
    for family_word in (SIGMOID, SOFTMAX, "binary"):  # kinds named after a family, not a loss
        owners.pop(family_word, None)
    return owners


def test_a_loss_id_is_spelled_only_by_its_family_module():
    """Walk every module of lossaudit/: a string constant equal to a registered loss id appears
    only in the registry and in the module of that loss's family (everything else imports its
    constant). Docstrings and longer strings that mention an id do not count."""
    import ast

    owners = _declaring_modules()
    registry = str(ROOT / "lossaudit" / "losses" / "registry.py")
    misplaced = []
    for path in sorted((ROOT / "lossaudit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in owners:
                if str(path) not in (owners[node.value], registry):
                    misplaced.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not misplaced, "loss ids spelled outside their family module:\n" + "\n".join(misplaced)
