"""What the report formats of both commands share: writing a report whole, GitHub workflow
commands, JUnit XML, and repository-relative paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lossaudit.errors import InputError
from lossaudit.io.filemode import create_temporary

GITHUB_LEVELS = {"error": "error", "warning": "warning", "info": "notice"}


def write_report(text: str, output: Path | None) -> None:
    """Write to stdout, or to ``output`` whole: a temporary file in the same folder, then a rename;
    the file gets the mode ``open()`` would give it under the user's umask."""
    if output is None:
        sys.stdout.write(text)
        return
    temporary = None
    try:
        descriptor, temporary = create_temporary(output.resolve().parent, f".{output.name}.")
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, output)
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise InputError(f"--output {output}: cannot write ({error.strerror})") from None


def refuse_overwriting_inputs(output: Path | None, inputs: list[Path | None], read_suffixes: tuple[str, ...]) -> None:
    """Refuse an ``--output`` that is a file the command reads: one of ``inputs``, or a file with
    one of ``read_suffixes`` inside an input folder (a dump folder, a folder linted by discovery).

    Raises:
        InputError: naming the input the report would replace.
    """
    if output is None:
        return
    target = output.resolve()
    for given in filter(None, inputs):
        source = Path(given).resolve()
        inside = source.is_dir() and source in target.parents and target.suffix in read_suffixes
        if target == source or inside:
            raise InputError(f"--output {output}: that would overwrite {given}, an input of this command; lossaudit never overwrites what it reads")


def escape_data(text: str) -> str:
    """Escape a workflow command's message: ``%``, CR and LF."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value: as a message, plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(severity: str, message: str, file: str | None = None, line: int | None = None, title: str | None = None) -> str:
    """One GitHub annotation, ``::error file=…,line=…,title=…::message``."""
    properties = ",".join(f"{key}={escape_property(str(value))}" for key, value in (("file", file), ("line", line), ("title", title)) if value is not None)
    command = GITHUB_LEVELS[severity] + (f" {properties}" if properties else "")
    return f"::{command}::{escape_data(message)}"


def junit_xml(suite_name: str, cases: list[dict]) -> str:
    """JUnit XML with one suite. Each case: ``classname``, ``name``, and optionally ``failure``
    (message, details), ``skipped`` (message) or ``output`` (system-out text)."""
    from xml.etree import ElementTree  # only the JUnit reports need it

    failures = sum(1 for case in cases if case.get("failure"))
    skipped = sum(1 for case in cases if case.get("skipped"))
    suites = ElementTree.Element("testsuites", name="lossaudit", tests=str(len(cases)), failures=str(failures))
    suite = ElementTree.SubElement(suites, "testsuite", name=suite_name, tests=str(len(cases)), failures=str(failures), errors="0", skipped=str(skipped))
    for case in cases:
        element = ElementTree.SubElement(suite, "testcase", classname=case["classname"], name=case["name"])
        if case.get("failure"):
            message, details = case["failure"]
            ElementTree.SubElement(element, "failure", message=message, type=case.get("type", "error")).text = details
        elif case.get("skipped"):
            ElementTree.SubElement(element, "skipped", message=case["skipped"])
        if case.get("output"):
            ElementTree.SubElement(element, "system-out").text = case["output"]
    ElementTree.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(suites, encoding="unicode") + "\n"


def repository_root(start: Path | None = None) -> Path:
    """The nearest folder above ``start`` (default: the current one) holding ``.git``, else ``start``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def repository_relative(path: str, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (as SARIF and GitHub expect)."""
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()
