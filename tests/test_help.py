"""`--help` reads like a good CLI: every option's help is shown as written (Rich markup must not
eat "[tool.lossaudit]" or "[default: ...]"), options sit in named panels, flags show no
placeholder, and Typer's own usage errors use lossaudit's one-line form."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from rich.cells import cell_len
from typer.testing import CliRunner

from lossaudit.cli import app

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)

COMMANDS = ["", *sorted(typer.main.get_command(app).commands)]
"""The main app ("") and every command, present and future."""
PANELS = {"compare": ("Input", "Losses", "Report", "CI", "Model"), "lint": ("Target", "Probes", "Report", "CI")}


def _help(command: str) -> str:
    arguments = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(app, arguments, env={"COLUMNS": "400", "NO_COLOR": "1"}, terminal_width=400)
    assert result.exit_code == 0, result.output
    return result.output


def _flat(text: str) -> str:
    """Help text without the panels' borders, with whitespace folded."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _parameters(command: str):
    click_command = typer.main.get_command(app)
    if command:
        click_command = click_command.commands[command]
    return [param for param in click_command.params if getattr(param, "help", None)]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_text_is_shown_as_written(command):
    shown = _flat(_help(command))
    parameters = _parameters(command)
    assert parameters
    for param in parameters:
        written = " ".join(param.help.split()).replace("\\[", "[")  # the source escapes '[' for Rich
        assert written in shown, (param.name, written)


@pytest.mark.parametrize("width", [50, 60, 72])
@pytest.mark.parametrize("command", COMMANDS)
def test_narrow_terminals_get_every_option_name_whole(command, width):
    """Below the width Typer's option tables need, the options are stacked (names, then help):
    no cell cut with "…", no line wider than the terminal. Before: "--background-in…" at 60."""
    arguments = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(app, arguments, env={"COLUMNS": str(width), "NO_COLOR": "1"}, terminal_width=width)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert max(cell_len(line) for line in result.output.splitlines()) <= width
    words = set(re.findall(r"--[a-z][a-z-]*", result.output))
    for param in _parameters(command):
        for name in (n for n in (*param.opts, *param.secondary_opts) if n.startswith("--")):
            assert name in words, (name, width)


def test_wide_terminals_keep_the_option_tables():
    """Where they fit, the options stay one table row each: names and help on one line."""
    assert re.search(r"│ --format +.*Report format", _help("compare"))


def test_bracketed_text_survives():
    assert "pyproject.toml ([tool.lossaudit])" in _flat(_help("compare"))
    assert (
        "[default: ce,bce,focal,softmax-focal,ghm (ce,softmax-focal not on heatmaps); +centernet for heatmaps, +qfl,vfl for soft targets, +asl for multi-label targets]"
        in _flat(_help("compare"))
    )
    assert "[default: the configured lint.targets]" in _flat(_help("lint"))


@pytest.mark.parametrize("command", COMMANDS)
def test_no_python_type_placeholders(command):
    """Flags show no ``<bool>``, arguments no ``<list[Path]>``; choices such as ``<text|json>`` stay."""
    text = _help(command)
    assert not re.search(r"<(bool|str|int|float|path|Path|list\[[^>]*)>", text), text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "...]..." not in usage, usage


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_every_option_of_a_command_sits_in_a_named_panel(command):
    """Only ``-h/--help`` stays in the generic "Options" panel."""
    options = [param for param in _parameters(command) if param.param_type_name == "option"]
    assert [param.name for param in options if not getattr(param, "rich_help_panel", None)] == []


@pytest.mark.parametrize("command", sorted(PANELS))
def test_options_are_grouped_in_panels(command):
    text = _help(command)
    for panel in PANELS[command]:
        assert re.search(rf"╭─ {panel} ─", text), panel


@pytest.mark.parametrize(
    "arguments, says",
    [
        (["compare", "--nope"], "No such option: --nope"),
        (["compare", "--format", "xml", "x.npz"], "--format xml: expected one of text, json, markdown, github, junit, html"),
        (["compare", "--top", "0", "x.npz"], "--top 0: expected at least 1"),
        (["compare", "--top", "x", "x.npz"], "--top x: expected an integer"),
        (["compare", "--gamma", "abc", "x.npz"], "--gamma abc: expected a number"),
        (["compare", "--label-base", "3", "x.npz"], "--label-base 3: expected at most 1"),
        (["lint", "--kind", "maybe", "x.py:F"], "--kind maybe: expected one of auto, sigmoid, softmax"),
        (["compare", "--class-names"], "'--class-names' requires an argument"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_usage_errors_are_one_line(arguments, says, tmp_path):
    """In lossaudit's words, as its own checks put them ("--bins -1: expected at least 1"), not the
    validation library's. Before: "Invalid value for '--top': Input should be a valid integer,
    unable to parse string as an integer", "Value error, 'xml' is not one of ..."."""
    result = subprocess.run([sys.executable, "-m", "lossaudit", *arguments], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("lossaudit: error: ") and says in lines[0], lines[0]
    assert not any(words in lines[0] for words in ("Input should", "Value error", "unable to parse")), lines[0]
    assert result.stdout == ""


def test_no_arguments_prints_the_help():
    result = subprocess.run([sys.executable, "-m", "lossaudit"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Usage: lossaudit" in result.stdout and "Commands" in result.stdout
    assert result.stdout.count("Usage:") == 1, "the help is printed once"  # before: twice (51 lines)


BLOCK_TORCH = """import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
sys.meta_path.insert(0, _NoTorch())
"""
"""A sitecustomize that makes ``import torch`` fail as it does where torch is not installed."""


def test_a_path_that_needs_torch_says_so_where_it_is_missing(tmp_path):
    """lint (and compare --model, .pt dumps) need torch; where it is missing the error says so and
    what works without it. Before: "internal error: ModuleNotFoundError: No module named 'torch'"."""
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(BLOCK_TORCH)
    (tmp_path / "loss.py").write_text("def focal(logits, targets):\n    return logits.sum()\n")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "block"), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "lossaudit", "lint", "loss.py:focal"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "lossaudit: error: this needs PyTorch, which is not installed here: pip install torch (compare and sweep on "
        "saved .npz/.npy dumps, explain, rules and losses run without it)"
    )


def test_help_builds_no_validator():
    """``--help`` (the group's and a command's) imports neither pydantic (Typer's validators, built
    when a value is coerced: the help flag's None was, ~60 ms a process) nor numpy or torch."""
    code = (
        "import sys\n"
        "from lossaudit.cli import main\n"
        "for argv in (['lossaudit', '--help'], ['lossaudit', 'compare', '--help'], ['lossaudit', 'lint', '--help']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "print(sorted(name for name in ('pydantic', 'numpy', 'torch') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
