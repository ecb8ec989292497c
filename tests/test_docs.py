"""The README and the docs site stay true: CI runs the README's commands, the README and the site
document every command, option, loss and rule, every command and code example in them runs, and
`mkdocs build --strict` builds the site."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from lossaudit.cli import app
from tests.docs_text import README, ROOT, blocks, everything, page, pages, rules_hook, squeeze

README_LINES = 250
"""Issue 26: the README stays under this many lines; the rest lives on the site."""


def test_ci_runs_the_readme_commands():
    ci_commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("pip install torch==2.13.0 -e")]
    assert len(ci_commands) == 2
    readme_commands = {line.strip() for _, block in blocks(README, "bash") for line in block.splitlines()}
    for command in ci_commands:
        assert command in readme_commands


def test_the_readme_is_short_and_links_into_the_docs():
    assert len(README.splitlines()) < README_LINES
    links = re.findall(r"\]\(((?:docs/)[^)#\s]+)(?:#[^)]*)?\)", README)
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
    site = re.search(r'^Documentation = "(.*)"$', (ROOT / "pyproject.toml").read_text(), flags=re.M).group(1)
    assert site in README
    assert f"site_url: {site}" in (ROOT / "mkdocs.yml").read_text()


def test_every_page_is_in_the_nav():
    """mkdocs.yml's nav lists every page under docs/ (the hook adds the generated rule pages)."""
    import yaml

    config = (ROOT / "mkdocs.yml").read_text()
    nav = yaml.safe_load(config[config.index("\nnav:") :])["nav"]

    def listed(entries) -> set[str]:
        found = set()
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found |= listed(value) if isinstance(value, list) else {value}
        return found

    assert listed(nav) == set(pages())


def test_every_option_is_documented():
    documented = everything()
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"lossaudit {name}" in documented
        for parameter in command.params:
            for option in parameter.opts:
                if option.startswith("-") and option not in ("--help", "-h"):
                    assert f"`{option}" in documented or f"{option}`" in documented, f"{name} {option} is in neither the README nor the docs"


def test_every_loss_identifier_is_documented():
    from lossaudit.losses import LOSS_IDS

    for loss in LOSS_IDS:
        assert f"| `{loss}` |" in page("losses.md")


def test_every_rule_has_its_row_and_its_page():
    """The rules index has a row per rule linking its page; the hook writes that page from the
    registry with everything `lossaudit rules CODE` prints."""
    from lossaudit.lint.rules import RULES

    index = page("lint/rules/index.md")
    generated = rules_hook().pages()
    assert set(generated) == {f"lint/rules/{rule.code}.md" for rule in RULES}
    for rule in RULES:
        assert f"| [{rule.code}]({rule.code}.md) | {rule.name} |" in index
        text = generated[f"lint/rules/{rule.code}.md"]
        assert text.startswith(f"# {rule.code} {rule.name}\n") and f"**severity** {rule.severity}" in text
        assert f"```python\n{rule.wrong.rstrip()}\n```" in text and f"```python\n{rule.right.rstrip()}\n```" in text
        plain = text.replace("\\", "").replace("&lt;", "<")
        for prose in (rule.summary[1:], rule.explanation, rule.fix[1:], *(fix for _, fix in rule.fixes)):
            assert prose in plain, (rule.code, prose[:60])


def test_rule_pages_render_the_rules_text_as_written():
    """A rule's prose is plain text: `**`, `_`, `[` and `<` come out as written, not as markup."""
    markdown = pytest.importorskip("markdown", reason="the Markdown package comes with the docs extra")
    rule = next(rule for rule in rules_hook().RULES if "**" in rule.summary)
    html = markdown.markdown(rules_hook().render(rule)).replace("&lt;", "<")
    assert "<em>" not in html
    for prose in (rule.summary[1:], rule.explanation):
        assert prose in html


def test_readme_model_example_runs(run_cli, monkeypatch):
    text = page("compare/model.md")
    monkeypatch.chdir(ROOT)
    command = next(line for line in text.splitlines() if line.startswith("lossaudit compare --model examples/"))
    result = run_cli(*command.split()[1:], "--format", "json", "--isolated")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["input"]["model"]["kind"] == "state dict" and report["input"]["rows"] == 2000
    shares = {c["name"]: c["share"] for c in report["per_class"]}
    # the claim the page makes: softmax focal shifts weight from road to the rare classes
    assert shares["road"]["softmax-focal"] < shares["road"]["ce"]
    assert shares["cyclist"]["softmax-focal"] > shares["cyclist"]["ce"] and shares["animal"]["softmax-focal"] > shares["animal"]["ce"]
    # and what its summary says of animal: rare, missed, and what cb-ce would give it
    counts = sorted(c["positives"] for c in report["per_class"])
    assert report["imbalance"]["rare_classes"] == {"animal": 17} and counts[0] == 17 and counts[2] == report["imbalance"]["median_positives"] == 203
    rules = {s["rule"]: s for s in report["summary"]}
    assert rules["missed-classes"]["numbers"]["classes"] == ["animal"]
    advice = rules["imbalance"]["numbers"]["advice"]
    said = (
        f"`cb-ce` would give the rare class {100 * advice['cb-ce (beta 0.9999)']['rare_share']:.1f}% of the loss where `ce` gives it "
        f"{100 * advice['ce']['rare_share']:.1f}%"
    )  # the page states the report's numbers (test_diagnosis checks them against torch)
    assert said in " ".join(text.split())


# --- every command and code example of the README and the site runs ------------------------------

SOURCES = {"README.md": README, **{f"docs/{name}": text for name, text in pages().items()}}

NOT_RUN = {
    "pip install torch==2.13.0 -e . && lossaudit compare examples/detection.npz": ".ci/run runs it (test_ci_runs_the_readme_commands)",
    'pip install torch==2.13.0 -e ".[test]" && python -m pytest': ".ci/run runs it (test_ci_runs_the_readme_commands)",
    "python benchmarks/compare_bench.py --anchors 1000000 4000000 --repeat 5   # 80M and 320M elements": "a benchmark of minutes on 1.2 GiB of dumps; test_benchmark_commands_parse checks its options",
    "python benchmarks/startup_bench.py --repeat 11": "a benchmark of a minute of process starts; test_benchmark_commands_parse checks its options",
    "python benchmarks/record_bench.py --repeats 7 --threads 1   # and --threads 2, and --skewed": "a benchmark of a minute on a 256 MB batch; test_benchmark_commands_parse checks its options",
    "python benchmarks/sweep_bench.py --repeat 5 --before /tmp/before": "a benchmark of minutes on two 313 MiB dumps, against an older tree; test_benchmark_commands_parse checks its options",
    "python benchmarks/families_bench.py --repeat 5": "a benchmark of a minute on 8M-element dumps; test_benchmark_commands_parse checks its options",
    "python benchmarks/weighted_bench.py --repeat 5                       # and PYTHONPATH=/tmp/before …": "a benchmark of a minute on the 313 MiB dump and its sample; test_benchmark_commands_parse checks its options",
    "python benchmarks/targets_bench.py --repeat 5 --before /tmp/before": "a benchmark of a minute on three 80M-element dumps (1 GB), against an older tree; test_benchmark_commands_parse checks its options",
    "python benchmarks/advice_bench.py --repeat 5     # 1,000,000 rows × 100 classes, long-tailed": "a benchmark of a minute on a 1M × 100 dump; test_benchmark_commands_parse checks its options",
    "python benchmarks/compare_bench.py --repeat 5 --before /tmp/before    # /tmp/before: git archive af30b2a lossaudit | tar -x -C /tmp/before": "a benchmark of minutes on the 313 MiB dump (the baseline process alone: ~17 s and 4 GiB), against an older tree; test_benchmark_commands_parse checks its options",
}
"""Commands shown but not run here, each with the reason."""

NOT_EXECUTED = {
    "docs/api.md#2": "tests/test_api.py runs it as a test file (test_the_readme_pytest_example_runs)",
    "docs/extending.md#1": "tests/test_extending.py adds it to a copy of the package and runs it",
    "docs/extending.md#2": "tests/test_extending.py adds it to a copy of the package and runs it",
    "docs/lint/suppressions.md#1": "a fragment (where the comment goes); tests/test_lint_near_miss.py runs suppression comments",
}
"""Python blocks (``FILE#n``: the n-th Python block of FILE) not executed here, each with the reason."""


def _commands() -> list[tuple[str, str, list[str]]]:
    """(where, command, the output lines shown after it): each line of a ```bash block, and each
    `$ lossaudit ...` line of another block with the lines that follow it."""
    found = []
    for name, text in SOURCES.items():
        for info, body in blocks(text):
            lines = body.splitlines()
            if info == "bash":
                found += [(name, line, []) for line in lines if line.strip()]
            elif lines and lines[0].startswith("$ "):
                found.append((name, lines[0][2:], lines[1:]))
    return found


def _python_blocks() -> list[tuple[str, str]]:
    return [(f"{name}#{i}", body) for name, text in SOURCES.items() for i, (_, body) in enumerate(blocks(text, "python"), 1)]


MYPKG_FOCAL = '''

class FocalLoss(torch.nn.Module):
    """The sigmoid focal loss as a class, mean over elements."""

    def __init__(self, alpha=0.25, gamma=2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, inputs, targets):
        return sigmoid_focal_loss(inputs, targets, self.alpha, self.gamma, reduction="mean")
'''


@pytest.fixture
def user_folder(tmp_path, monkeypatch) -> Path:
    """A folder like a user's: the examples, `my_focal.py` and a package `mypkg` with the losses the
    docs name (restated in tests/fixtures/user_losses/my_focal.py), as the current folder."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    my_focal = (ROOT / "tests" / "fixtures" / "user_losses" / "my_focal.py").read_text()
    (tmp_path / "my_focal.py").write_text(my_focal)
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "losses.py").write_text(my_focal + MYPKG_FOCAL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_every_command_is_run_or_says_why_not():
    commands = {command for _, command, _ in _commands()}
    assert set(NOT_RUN) <= commands, "NOT_RUN names a command the docs no longer show"
    assert all(c.startswith("lossaudit ") for c in commands - set(NOT_RUN))
    assert set(NOT_EXECUTED) <= {where for where, _ in _python_blocks()}


@pytest.mark.parametrize(
    "where, command, shown", [c for c in _commands() if c[1] not in NOT_RUN], ids=lambda v: v if isinstance(v, str) and " " not in v else None
)
def test_documented_command_runs(where, command, shown, run_cli, user_folder, monkeypatch):
    """Each `lossaudit` command of the docs runs from a user's folder and exits 0, or 1 where the
    page says it fails (a finding, a gate); the output shown after a `$ lossaudit` line is its
    output (lines compared with their whitespace squeezed, `...` elided)."""
    if "--baseline early.json" in command and not (user_folder / "early.json").exists():
        assert run_cli("compare", "examples/model/runs/early.npz", "--format", "json", "--output", "early.json").exit_code == 0
    if command.startswith("lossaudit compare sample/"):  # the run the page's `lossaudit sample ... --output sample/` writes
        assert run_cli("sample", "examples/detection.npz", "--rate", "0.05", "--seed", "0", "--output", "sample/").exit_code == 0
    monkeypatch.setenv("COLUMNS", str(max([80, *(len(line) for line in shown)])))  # the width the excerpt was drawn at
    result = run_cli(*command.split()[1:])
    assert result.exit_code in (0, 1), f"{where}: {command}\n{result.stderr}"
    assert "Traceback" not in result.stderr and "error:" not in result.stderr, result.stderr
    output = squeeze(result.stdout)
    for line in shown:
        if line.strip() not in ("", "...", "…"):
            assert squeeze(line) in output, f"{where}: `{command}` does not print {line!r}"


def test_the_lint_excerpts_are_real_output(run_cli, monkeypatch):
    """The README's and the lint page's output of `lossaudit lint examples/losses/buggy.py:NaiveFocalLoss`."""
    monkeypatch.chdir(ROOT)
    result = run_cli("lint", "examples/losses/buggy.py:NaiveFocalLoss")
    assert result.exit_code == 1
    output = squeeze(result.stdout)
    for text in (README, page("lint/index.md")):
        excerpt = next(body for info, body in blocks(text) if info == "" and "NaiveFocalLoss" in body)
        for line in excerpt.splitlines():
            assert squeeze(line) in output, line


def test_the_readme_gate_says_what_the_gate_says(run_cli, user_folder):
    assert run_cli("compare", "examples/model/runs/early.npz", "--format", "json", "--output", "early.json").exit_code == 0
    result = run_cli("compare", "examples/model/runs/late.npz", "--baseline", "early.json", "--fail-if-share-moves", "20")
    assert result.exit_code == 1
    said = re.search(r"saying on stderr: `(.*?)`", " ".join(README.split())).group(1)
    assert said == result.stderr.strip()


def test_benchmark_commands_parse():
    """The benchmark command the performance page shows names options the script has."""
    for command in NOT_RUN:
        if command.startswith("python benchmarks/"):
            script, *arguments = command.split("#")[0].split()[1:]
            help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120).stdout
            for option in (a for a in arguments if a.startswith("--")):
                assert option in help_text, (script, option)


PRELUDE = """
import torch

torch.manual_seed(0)
images, labels = torch.randn(64, 20), torch.randint(0, 20, (64,))
model = torch.nn.Identity()
val_loader = [(images, labels), (images, labels)]
CLASSES = [f"class {i}" for i in range(20)]
"""
"""What the docs' Python examples take from the reader's own code: a model, a batch, a loader and
the class names (20 classes, as the detection example's)."""


@pytest.mark.parametrize("where, code", [b for b in _python_blocks() if b[0] not in NOT_EXECUTED], ids=lambda v: v if "#" in v else None)
def test_documented_python_runs(where, code, user_folder):
    """Each Python example runs, statement by statement, after :data:`PRELUDE`; the one statement
    allowed to fail is `to_frame`, which needs pandas (the page says `pip install pandas`), and only
    where pandas is not installed."""
    namespace: dict = {}
    exec(PRELUDE, namespace)
    pandas = importlib.util.find_spec("pandas") is not None
    for statement in ast.parse(code).body:
        source = ast.unparse(statement)
        try:
            exec(compile(ast.Module([statement], []), where, "exec"), namespace)
        except ImportError as error:
            assert not pandas and "to_frame" in source and "pandas" in str(error), f"{where}: {source}: {error}"


def test_mkdocs_build_strict(tmp_path):
    """`mkdocs build --strict` builds the site (the docs extra); .ci/run builds it too."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip('mkdocs is not installed here (pip install -e ".[docs]"); .ci/run installs it and builds the site')
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from lossaudit.lint.rules import RULES

    assert all((tmp_path / "site" / "lint" / "rules" / rule.code / "index.html").is_file() for rule in RULES)
    assert "lossaudit.api.compare" in (tmp_path / "site" / "api" / "index.html").read_text()
