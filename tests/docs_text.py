"""The documentation as the tests read it: README.md, the pages under docs/, and the rule pages the
mkdocs hook (docs_hooks/rules_pages.py) writes from the rule registry when the site is built."""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()


def page(name: str) -> str:
    """The text of ``docs/NAME`` (``"compare/baseline.md"``)."""
    return (DOCS / name).read_text()


def pages() -> dict[str, str]:
    """Every Markdown page under docs/, by its path relative to docs/."""
    return {path.relative_to(DOCS).as_posix(): path.read_text() for path in sorted(DOCS.rglob("*.md"))}


@cache
def rules_hook():
    """docs_hooks/rules_pages.py, imported from its file (it is mkdocs's hook, not a package)."""
    spec = importlib.util.spec_from_file_location("rules_pages", ROOT / "docs_hooks" / "rules_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def everything() -> str:
    """The README and every page of the site, the generated rule pages included."""
    return "\n".join([README, *pages().values(), *rules_hook().pages().values()])


def blocks(text: str, language: str | None = None) -> list[tuple[str, str]]:
    """The fenced code blocks of ``text`` as (info string, body), of one language if given."""
    found = re.findall(r"^```([^\n]*)\n(.*?)^```", text, flags=re.S | re.M)
    return [(info, body) for info, body in found if language is None or info.split(" ")[0] == language]


def squeeze(text: str) -> str:
    """Whitespace runs as one space: lines compared with output wrapped or aligned otherwise."""
    return " ".join(text.split())
