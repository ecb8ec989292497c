"""The wild corpus (tests/fixtures/wild, issue 21) is consistent: every manifest entry names a module
that exists in its split's folder and imports, a target that resolves, settings its signature
accepts, rule codes that exist, and the source and defects its docstring states; the split follows
the stated seed. lint's scores on the corpus are measured by benchmarks/lint_wild.py, not here."""

import importlib.util
import inspect
import random
import re
from pathlib import Path

import pytest
import yaml

from lossaudit.lint.rules import RULES_BY_CODE

ROOT = Path(__file__).resolve().parent.parent
WILD = ROOT / "tests" / "fixtures" / "wild"
MANIFEST = yaml.safe_load((WILD / "manifest.yaml").read_text())
FIXTURES = MANIFEST["fixtures"]
IDS = [Path(fixture["module"]).stem for fixture in FIXTURES]


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"_wild_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docstring_field(doc: str, name: str) -> str | None:
    match = re.search(rf"^{name}: (.+)$", doc, re.M)
    return match.group(1).strip() if match else None


def test_corpus_size_and_balance():
    assert len(FIXTURES) >= 40
    assert len(set(IDS)) == len(IDS)
    for split in ("dev", "heldout"):
        members = [fixture for fixture in FIXTURES if fixture["split"] == split]
        assert any(fixture["correct"] for fixture in members), split
        assert any(not fixture["correct"] for fixture in members), split
        assert sum(fixture["correct"] for fixture in members) >= 5, split


def test_split_follows_the_stated_seed():
    """One random.Random(seed) shuffles the sorted correct module names, then (the same generator)
    the sorted buggy ones; the first floor(n/2) of each go to dev."""
    expected = {}
    generator = random.Random(MANIFEST["seed"])
    for correct in (True, False):
        names = sorted(name for name, fixture in zip(IDS, FIXTURES) if fixture["correct"] is correct)
        generator.shuffle(names)
        half = len(names) // 2
        expected.update({name: "dev" for name in names[:half]})
        expected.update({name: "heldout" for name in names[half:]})
    assert {name: fixture["split"] for name, fixture in zip(IDS, FIXTURES)} == expected


def test_split_folders_hold_exactly_the_manifest_modules():
    for split in ("dev", "heldout"):
        on_disk = {path.stem for path in (WILD / split).glob("*.py") if path.name != "__init__.py"}
        assert on_disk == {name for name, fixture in zip(IDS, FIXTURES) if fixture["split"] == split}
        assert (WILD / split / "__init__.py").exists()


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_fixture_entry(fixture):
    path = ROOT / fixture["module"]
    assert path.parent.name == fixture["split"]
    location, _, symbol = fixture["target"].rpartition(":")
    assert location == fixture["module"]
    target = getattr(_import(path), symbol)
    assert callable(target)
    signature = inspect.signature(target.__init__ if inspect.isclass(target) else target)
    accepts_any = any(parameter.kind is parameter.VAR_KEYWORD for parameter in signature.parameters.values())
    assert accepts_any or set(fixture["init"]) <= set(signature.parameters), fixture["init"]
    assert fixture["correct"] == (not fixture["defects"])
    for defect in fixture["defects"]:
        assert re.fullmatch(r"[a-z0-9]+-\d+", defect["id"]) and re.fullmatch(r"[a-z0-9-]+", defect["kind"])
        assert defect["rules"] and set(defect["rules"]) <= set(RULES_BY_CODE), defect


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_docstring_states_source_target_and_defects(fixture):
    doc = (ROOT / fixture["module"]).read_text().split('"""')[1]
    assert _docstring_field(doc, "Source repository") == fixture["source"]["repository"]
    assert _docstring_field(doc, "Path").split(" (")[0] == fixture["source"]["path"]
    assert re.fullmatch(r"[0-9a-f]{40}", _docstring_field(doc, "Commit")) and _docstring_field(doc, "Commit") == fixture["source"]["commit"]
    assert _docstring_field(doc, "Target") == fixture["target"].rpartition(":")[2]
    assert _docstring_field(doc, "Settings")
    stated = re.findall(r"^- ([a-z0-9]+-\d+) \(([a-z0-9-]+)\):", doc, re.M)
    assert stated == [(defect["id"], defect["kind"]) for defect in fixture["defects"]]
