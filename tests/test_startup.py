"""Start-up (issue 26 point 8): what a ``lossaudit`` process loads before its work, and the option
values it converts itself (:mod:`lossaudit.cli.convert`) instead of through Typer's pydantic
validators. The timings are benchmarks/startup_bench.py's; here, the imports that made them slow
must stay off, and the conversions must give the command what Typer's did."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from lossaudit.cli import app
from lossaudit.cli.convert import ValueRefused, converter
from lossaudit.formats import CompareFormat

pytestmark = pytest.mark.torch_free

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = list(typer.main.get_command(app).commands)
HEAVY = ("pydantic", "numpy", "torch", "typer.rich_utils", "rich.markdown", "markdown_it", "rich.console", "rich.table")
"""Modules a help or version process must not import when its output is not a terminal:
Typer's validators, the numeric stack, Typer's rich help and rich's rendering."""


DRAWING = ("rich.console", "rich.progress", "rich.table", "rich.cells", "secrets", "xml.etree.ElementTree", "html")
"""Modules a ``compare`` that draws nothing (a JSON report, output piped; the Python API) must not
import: rich's console, progress and tables (~20 ms: the progress display is for terminals and
the tables for text), ``secrets`` (hmac, ~4 ms: the temporary names take ``os.urandom``), the
JUnit report's XML and the HTML report's :mod:`html`."""


def _loaded_after(argv: list[str], names: tuple[str, ...] = HEAVY) -> tuple[int, list[str]]:
    """The exit code of ``lossaudit ARGV`` run in a child (output piped), and which of ``names`` it imported."""
    code = (
        "import sys\n"
        "from lossaudit.cli import main\n"
        f"sys.argv = ['lossaudit', *{argv!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        f"print(code, sorted(name for name in {names!r} if name in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    exit_code, loaded = last.split(" ", 1)
    return int(exit_code), eval(loaded)  # a list literal of module names, printed above


@pytest.mark.parametrize("argv", [["--help"], ["-h"], [], ["--version"], *([name, "--help"] for name in COMMANDS)])
def test_help_and_version_import_nothing_heavy(argv):
    """Before: every process imported pydantic (~60 ms), ``--help`` typer.rich_utils with rich's
    markdown parser (~40 ms) and rich's console and tables (the ~80 ms option tables)."""
    exit_code, loaded = _loaded_after(argv)
    assert exit_code == (2 if not argv else 0)
    assert loaded == [], (argv, loaded)


def test_a_compare_run_builds_no_validator():
    """The fixed cost of a run: its options are converted without pydantic (Typer built a
    validator for each of compare's ~50 parameters, given or not)."""
    exit_code, loaded = _loaded_after(["compare", str(ROOT / "examples" / "detection.npz"), "--format", "json", "--isolated", "--top", "3"])
    assert exit_code == 0
    assert "pydantic" not in loaded and "torch" not in loaded


@pytest.mark.parametrize("dump", ["detection.npz", "classification.npz"])
def test_a_json_compare_run_loads_nothing_that_draws(dump):
    """``compare --format json`` piped: its report is ``json.dumps``'s, and no progress is shown
    off a terminal; before, every run imported rich's console and progress, ``secrets`` and the
    JUnit report's XML parser (~30 ms of a ~0.15 s process on the example dumps)."""
    exit_code, loaded = _loaded_after(["compare", str(ROOT / "examples" / dump), "--format", "json", "--isolated"], DRAWING)
    assert exit_code == 0
    assert loaded == []


def test_the_api_on_arrays_loads_nothing_that_draws():
    """``lossaudit.compare(logits=..., targets=...)`` returns the report; it draws nothing."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import lossaudit\n"
        "logits = np.linspace(-4, 4, 64 * 5, dtype=np.float32).reshape(64, 5)[::-1]\n"  # not numpy.random: it imports secrets
        "report = lossaudit.compare(logits=logits, targets=np.arange(64) % 6)\n"
        "assert report.input['rows'] == 64\n"
        f"print(sorted(name for name in {DRAWING!r} if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_progress_display_imports_rich_only_for_a_terminal():
    """A dump over the display's threshold with stderr piped shows nothing and imports nothing
    to show it with (the display on a terminal: tests/test_save.py and test_cli_compare.py)."""
    code = (
        "import sys\n"
        "from lossaudit.render.progress import SHOW_FROM_BYTES, reading_status, tally_progress\n"
        "with reading_status(2 * SHOW_FROM_BYTES), tally_progress(SHOW_FROM_BYTES, 1) as advance:\n"
        "    assert advance is None\n"
        "print(sorted(name for name in ('rich.console', 'rich.progress') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_parameter_has_a_conversion():
    """A new option of a type lossaudit does not convert fails here, not on a user's command line."""
    group = typer.main.get_command(app)
    for command in [group, *group.commands.values()]:
        for param in command.params:
            converter(param)


def _param(command: str, name: str):
    return next(param for param in typer.main.get_command(app).commands[command].params if param.name == name)


@pytest.mark.parametrize(
    "command, name, given, expected",
    [
        ("compare", "top", "3", 3),
        ("compare", "timeout", "1e1", 10.0),
        ("compare", "timeout", "0.1", 0.1),
        ("compare", "gamma", " 2.5 ", 2.5),
        ("compare", "format", "json", CompareFormat.json),
        ("compare", "format", CompareFormat.text, CompareFormat.text),
        ("compare", "class_names", "names.txt", Path("names.txt")),
        ("compare", "logits_key", "scores", "scores"),
        ("compare", "paths", ("a.npz", "b"), (Path("a.npz"), Path("b"))),
        ("compare", "paths", None, ()),
        ("compare", "loss_init", ("focal.gamma=2", "focal.alpha=0.5"), ("focal.gamma=2", "focal.alpha=0.5")),
        ("compare", "top", None, None),
        ("compare", "strict", "true", True),
    ],
)
def test_values_arrive_as_typer_gave_them(command, name, given, expected):
    param = _param(command, name)
    converted = converter(param).coerce(given, param, None)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize(
    "name, given, said",
    [
        ("top", "0", "expected at least 1"),
        ("top", "2.5", "expected an integer"),
        ("label_base", "2", "expected at most 1"),
        ("timeout", "0.05", "expected at least 0.1"),
        ("gamma", "two", "expected a number"),
        ("format", "xml", "expected one of text, json, markdown, github, junit, html"),
        ("strict", "maybe", "expected true or false"),
    ],
)
def test_refusals_are_in_lossaudit_words(name, given, said):
    param = _param("compare", name)
    with pytest.raises(ValueRefused) as refused:
        converter(param).coerce(given, param, None)
    assert refused.value.said == said and refused.value.value == given


def _help(environment: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "lossaudit", "compare", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={key: value for key, value in {**os.environ, "COLUMNS": "100", **environment}.items() if value},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_terminal_gets_the_same_help_styled():
    """Where rich styles the help (a terminal; here FORCE_COLOR says so), the text is the plain
    help's, with colours around the option names."""
    plain = _help({"FORCE_COLOR": "", "NO_COLOR": "", "PY_COLORS": "", "GITHUB_ACTIONS": "", "TTY_COMPATIBLE": ""})
    styled = _help({"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert "\x1b[" in styled and "\x1b[" not in plain
    unstyled = re.sub(r"\x1b\[[0-9;]*m", "", styled)
    assert [line.rstrip() for line in unstyled.splitlines()] == [line.rstrip() for line in plain.splitlines()]


def test_windows_help_goes_through_rich(monkeypatch):
    """On Windows the styled help is printed by rich (which drives the legacy console): the same text."""
    from typer.testing import CliRunner

    def invoke() -> str:
        result = CliRunner().invoke(app, ["compare", "--help"], env={"COLUMNS": "100", "FORCE_COLOR": "1", "NO_COLOR": None})
        assert result.exit_code == 0, result.output
        return re.sub(r"\x1b\[[0-9;]*m", "", result.output)

    ansi = invoke()
    monkeypatch.setattr(sys, "platform", "win32")
    assert [line.rstrip() for line in invoke().splitlines()] == [line.rstrip() for line in ansi.splitlines()]


@pytest.mark.parametrize("width", range(40, 201, 16))
def test_help_fits_every_width(width):
    """At any width from 40 columns, every command's help keeps each line within the width, each
    option name whole and every word of each help text (the layouts switch at MIN_HELP)."""
    from rich.cells import cell_len
    from typer.testing import CliRunner

    group = typer.main.get_command(app)
    for name in ["", *COMMANDS]:
        result = CliRunner().invoke(app, [name, "--help"] if name else ["--help"], env={"COLUMNS": str(width), "NO_COLOR": "1"}, terminal_width=width)
        assert result.exit_code == 0, result.output
        assert max(cell_len(line) for line in result.output.splitlines()) <= width, (name, width)
        words = set(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
        command = group.commands[name] if name else group
        for param in command.params:
            assert all(option in result.output.split() or f"{option}," in result.output.split() for option in param.opts if option.startswith("--")), (
                name,
                param.name,
            )
            assert set((param.help or "").split()) <= words, (name, width, param.name)  # in order: test_help's wide test


@pytest.mark.parametrize("package", ["numpy", "torch", "typer", "no-such-package-here"])
def test_versions_are_the_metadata_s(package):
    """``--version`` reads versions from the dist-info folders' names; importlib.metadata agrees."""
    from importlib.metadata import PackageNotFoundError, version

    from lossaudit.cli.app import installed_version

    try:
        expected = version(package)
    except PackageNotFoundError:
        expected = None
    assert installed_version(package) == expected


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("3", "3")])
def test_the_program_gives_openblas_one_thread_unless_told(preset, expected):
    """``lossaudit``'s BLAS calls are small sums: its process sets ``OPENBLAS_NUM_THREADS=1``
    before numpy is imported (a pool of BLAS threads spins beside the forked workers; about 50 ms
    of CPU at numpy's import alone), and keeps a value the environment gives."""
    code = (
        "import os, sys\n"
        "from lossaudit.cli import main\n"
        "imported_before = 'numpy' in sys.modules\n"
        f"sys.argv = ['lossaudit', 'compare', {str(ROOT / 'examples' / 'detection.npz')!r}, '--format', 'json', '--isolated']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(imported_before, 'numpy' in sys.modules, os.environ.get('OPENBLAS_NUM_THREADS'), file=sys.stderr)\n"
    )
    env = {name: value for name, value in os.environ.items() if name != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.stderr.strip().splitlines()[-1] == f"False True {expected}"
