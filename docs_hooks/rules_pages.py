"""mkdocs hook: one page per lint rule, written at build time from the rule registry.

``lossaudit.lint.rules.RULES`` holds each rule's code, name, severity, summary, explanation, fix
(and the fixes for particular kinds of loss) and its wrong and right examples, the text
``lossaudit rules CODE`` prints. This hook renders each rule as ``lint/rules/CODE.md`` and lists the
pages in the nav under the rules index (``lint/rules/index.md``), as ruff's rule pages are derived
from its rule registry: a new rule gets its page without touching the docs.
"""

from __future__ import annotations

from lossaudit.lint.rules import RULES, Rule

INDEX = "lint/rules/index.md"
"""The hand-written rules page whose nav entry becomes the section of the generated pages."""


def page_path(rule: Rule) -> str:
    return f"lint/rules/{rule.code}.md"


def _prose(text: str) -> str:
    """Plain text (as the terminal shows it) as Markdown that renders the same characters:
    ``(1 - p_t**w)**gamma`` must not turn into emphasis."""
    for char in "\\`*_[]":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;")


def _sentence(text: str) -> str:
    return _prose(f"{text[0].upper()}{text[1:]}.")


def _code(text: str) -> str:
    return f"```python\n{text.rstrip()}\n```"


def render(rule: Rule) -> str:
    """The Markdown page of one rule: what ``lossaudit rules CODE`` prints, laid out for the site."""
    parts = [
        f"# {rule.code} {rule.name}",
        f"**Code** `{rule.code}` · **name** `{rule.name}` · **severity** {rule.severity} · `lossaudit rules {rule.code}` prints this page in the terminal.",
        _sentence(rule.summary),
        "## Why it matters",
        _prose(rule.explanation),
        "## How to fix it",
        _sentence(rule.fix),
    ]
    if rule.fixes:
        parts.append("For a loss of another kind (`--kind`):\n\n" + "\n".join(f"- `{kind}`: {_prose(fix)}" for kind, fix in rule.fixes))
    parts += [
        "## Wrong",
        _code(rule.wrong),
        "## Right",
        _code(rule.right),
        "[All rules](index.md) · [lint options](../options.md) · [suppressing a rule](../suppressions.md)",
    ]
    return "\n\n".join(parts) + "\n"


def pages() -> dict[str, str]:
    """Every rule's page, by its path under docs/."""
    return {page_path(rule): render(rule) for rule in RULES}


def _with_rules(nav: list) -> bool:
    """Replace the nav entry of :data:`INDEX` by a section of the index and every rule page."""
    for i, entry in enumerate(nav):
        title, value = next(iter(entry.items())) if isinstance(entry, dict) else (None, entry)
        if value == INDEX:
            section = [INDEX, *({f"{rule.code} {rule.name}": page_path(rule)} for rule in RULES)]
            nav[i] = {title or "Rules": section}
            return True
        if isinstance(value, list) and _with_rules(value):
            return True
    return False


def on_config(config, **kwargs):
    if config.nav is not None and not _with_rules(config.nav):
        raise ValueError(f"mkdocs.yml: the nav has no entry for {INDEX}")
    return config


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
