"""The README stays true: CI runs its commands, and it documents every option of every command."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from lossaudit.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_commands():
    ci_commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("pip install torch==2.13.0 -e")]
    assert len(ci_commands) == 2
    readme_blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    readme_commands = {line.strip() for block in readme_blocks for line in block.splitlines()}
    for command in ci_commands:
        assert command in readme_commands


def test_every_option_is_documented():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"lossaudit {name}" in README
        for parameter in command.params:
            for option in parameter.opts:
                if option.startswith("-") and option not in ("--help", "-h"):
                    assert f"`{option}" in README or f"{option}`" in README, f"{name} {option} is missing from the README"


def test_every_loss_identifier_is_documented():
    from lossaudit.losses import LOSS_IDS

    for loss in LOSS_IDS:
        assert f"| `{loss}` |" in README


def test_every_rule_is_in_the_readme_table():
    from lossaudit.lint.rules import RULES

    for rule in RULES:
        assert f"| {rule.code} | {rule.name} |" in README


def test_readme_model_example_runs(run_cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    command = next(line for line in README.splitlines() if line.startswith("lossaudit compare --model examples/"))
    result = run_cli(*command.split()[1:], "--format", "json", "--isolated")
    assert result.exit_code == 0, result.stderr
    import json

    report = json.loads(result.stdout)
    assert report["input"]["model"]["kind"] == "state dict" and report["input"]["rows"] == 2000
    shares = {c["name"]: c["share"] for c in report["per_class"]}
    # the claim the README makes: softmax focal shifts weight from road to the rare classes
    assert shares["road"]["softmax-focal"] < shares["road"]["ce"]
    assert shares["cyclist"]["softmax-focal"] > shares["cyclist"]["ce"] and shares["animal"]["softmax-focal"] > shares["animal"]["ce"]
    # and what its summary says of animal: rare, missed, and what cb-ce would give it
    counts = sorted(c["positives"] for c in report["per_class"])
    assert report["imbalance"]["rare_classes"] == {"animal": 17} and counts[0] == 17 and counts[2] == report["imbalance"]["median_positives"] == 203
    rules = {s["rule"]: s for s in report["summary"]}
    assert rules["missed-classes"]["numbers"]["classes"] == ["animal"]
    advice = rules["imbalance"]["numbers"]["advice"]
    said = (f"`cb-ce` would give the rare class {100 * advice['cb-ce (beta 0.9999)']['rare_share']:.1f}% of the loss where `ce` gives it "
            f"{100 * advice['ce']['rare_share']:.1f}%")  # the README states the report's numbers (test_diagnosis checks them against torch)
    assert said in " ".join(README.split())
