"""``compare --format html``: one self-contained page holding every table, the summary, the findings
and the plots; user text escaped; and, in a real headless Chromium, the report of every example
dump loads without a console error or a request for anything but itself, fits a phone's width, and
gives a screenshot and a PDF."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import signal
import struct
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import lossaudit
from lossaudit.cli import app
from lossaudit.render.compare import sections
from lossaudit.render.html import PLOTS_NEED_THE_EXTRA
from tests.conftest import write_npz

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["detection", "classification", "centernet"]
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
]
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}


def compare_html(*args: object) -> str:
    result = CliRunner().invoke(app, ["compare", *map(str, args), "--isolated", "--format", "html"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """The HTML report of each example dump, written by the CLI (``--output``)."""
    folder = tmp_path_factory.mktemp("html")
    for name in EXAMPLES:
        result = CliRunner().invoke(
            app,
            ["compare", str(ROOT / "examples" / f"{name}.npz"), "--isolated", "--format", "html", "--output", str(folder / f"{name}.html")],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.stderr
    return {name: folder / f"{name}.html" for name in EXAMPLES}


class Page(HTMLParser):
    """What a page holds: its tags, its tables (head, body and foot rows of cell texts), the text of
    its headings and list items, and every attribute value that names a resource."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.tables: list[dict[str, list[list[str]]]] = []
        self.headings: list[str] = []
        self.items: list[str] = []
        self.resources: list[str] = []
        self._part, self._cell, self._text = "body", None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.resources += [value for name, value in attrs if name in ("src", "href", "xlink:href", "action", "data") and value]
        if tag == "table":
            self.tables.append({"thead": [], "tbody": [], "tfoot": []})
        elif tag in ("thead", "tbody", "tfoot"):
            self._part = tag
        elif tag == "tr":
            self.tables[-1][self._part].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag in ("h2", "li"):
            self._text = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][self._part][-1].append(self._cell)
            self._cell = None
        elif tag == "h2":
            self.headings.append(self._text)
            self._text = None
        elif tag == "li":
            self.items.append(self._text)
            self._text = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._text is not None:
            self._text += data


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_page_is_self_contained(name, pages):
    text = pages[name].read_text(encoding="utf-8")
    page = Page(text)
    lowered = text.lower()
    assert "<script" not in lowered and "javascript:" not in lowered and "@import" not in lowered
    assert "http://" not in lowered and "https://" not in lowered
    assert not {"script", "link", "iframe", "object", "embed", "img"} & set(page.tags)
    assert all(ref.startswith(("#", "data:image/png;base64,")) for ref in page.resources), page.resources
    assert page.tags.count("svg") == 4 and page.tags.count("style") >= 1  # loss curves, density, loss and gradient shares
    assert "@media print" in text and 'name="viewport"' in text


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_page_holds_every_table_the_summary_and_the_findings(name, pages):
    report = lossaudit.compare(ROOT / "examples" / f"{name}.npz").to_dict()
    page = Page(pages[name].read_text(encoding="utf-8"))
    tables = sections(report)
    assert len(page.tables) == len(tables) >= 4
    for table, section in zip(page.tables, tables):
        assert table["thead"] == [section.headers], section.title
        assert table["tbody"] == section.rows, section.title
        assert table["tfoot"] == ([section.total] if section.total else []), section.title
        assert section.title in page.headings
    assert [sentence["text"] for sentence in report["summary"]] == page.items[: len(report["summary"])]
    for finding in report["findings"]:
        assert f"[{finding['code']}] {finding['message']}" in " ".join(page.items)
    assert {"Summary", "Loaded", "Plots"} <= set(page.headings)


def test_user_text_is_escaped(tmp_path):
    names = ["<img src=x onerror=alert(1)>", "a & b", "[bold]c[/bold]"]
    rng = np.random.default_rng(0)
    dump = write_npz(tmp_path / "d.npz", logits=rng.normal(size=(60, 3)).astype(np.float32), targets=rng.integers(0, 3, 60), class_names=np.array(names))
    text = compare_html(dump)
    page = Page(text)
    assert "img" not in page.tags and "&lt;img src=x onerror=alert(1)&gt;" in text and "a &amp; b" in text
    assert [row[0] for row in page.tables[1]["tbody"]] == names  # the per-class table, read back as the names


def test_without_matplotlib_the_page_says_how_to_get_the_plots(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    text = compare_html(ROOT / "examples" / "centernet.npz")
    assert "<svg" not in text and PLOTS_NEED_THE_EXTRA.replace("'", "&#x27;") in text
    assert len(Page(text).tables) == len(sections(lossaudit.compare(ROOT / "examples" / "centernet.npz").to_dict()))


def test_the_changes_since_a_baseline_are_on_the_page(tmp_path):
    early, late = ROOT / "examples" / "model" / "runs" / "early.npz", ROOT / "examples" / "model" / "runs" / "late.npz"
    result = CliRunner().invoke(app, ["compare", str(early), "--isolated", "--format", "json", "--output", str(tmp_path / "early.json")])
    assert result.exit_code == 0, result.stderr
    page = Page(compare_html(late, "--baseline", tmp_path / "early.json"))
    assert page.headings[-1] == "Since the baseline" and "pre" in page.tags


# --- a real browser ---------------------------------------------------------------------------


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    it reads commands from its fd 3 and writes replies and events to its fd 4, each a JSON
    message ended by a NUL byte). The browser runs in a process group of its own, killed at
    :meth:`close`."""

    def __init__(self, profile: Path):
        commands_read, self._commands = map(self._high, os.pipe())
        self._replies, replies_write = map(self._high, os.pipe())
        self.pid = os.posix_spawn(
            str(CHROMIUM),
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            dict(os.environ),
            setpgroup=0,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, commands_read, 3),
                (os.POSIX_SPAWN_DUP2, replies_write, 4),
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer, self._id, self.events = b"", 0, []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", self.session)

    @staticmethod
    def _high(fd: int) -> int:
        """``fd`` moved to a number of 10 or more, close-on-exec (fds 3 and 4 are the child's)."""
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return moved

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        """Run one command; the events that arrive meanwhile are kept in :attr:`events`."""
        self._id += 1
        os.write(
            self._commands, json.dumps({"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}).encode() + b"\0"
        )
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline)
            if message.get("id") == self._id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]
            self.events.append(message)

    def open(self, url: str, timeout: float = 30) -> list[dict]:
        """Load ``url`` and return the events of its loading, up to its load event."""
        self.events = []
        self.send("Page.navigate", self.session, url=url)
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == "Page.loadEventFired" for event in self.events):
            self.events.append(self._message(deadline))
        self.evaluate("0")  # a round trip: what the page logged while loading has arrived
        return self.events

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", self.session, expression=expression, returnByValue=True)["result"]["value"]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, TimeoutError, EOFError):
            pass
        finally:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            os.close(self._commands)
            os.close(self._replies)


def problems(events: list[dict], page: str) -> list[str]:
    """Console errors, uncaught exceptions, error log entries (a failed load among them) and
    requests for anything but ``page`` itself and inline ``data:`` images."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            found.append(f"console.{params['type']}: {params['args']}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.requestWillBeSent" and params["request"]["url"] != page and not params["request"]["url"].startswith("data:"):
            found.append(f"request: {params['request']['url']}")
    return found


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(
            "no /usr/bin/chromium: the HTML reports are opened in Debian's chromium package (apt-get install --no-install-recommends chromium, as .ci/run does)"
        )
    instance = Browser(tmp_path_factory.mktemp("chromium-profile"))
    instance.send("Emulation.setDeviceMetricsOverride", instance.session, **PHONE)
    yield instance
    instance.close()


def test_the_harness_sees_console_errors_and_requests(browser, tmp_path):
    """The checks below can fail: a page with a console error, an uncaught exception, a missing
    image and a request to a server trips each of them."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><img src="missing.png"><img src="http://127.0.0.1:9/x.png"><script>console.error("boom"); undefined_function();</script>')
    found = problems(browser.open(bad.as_uri()), bad.as_uri())
    assert any(p.startswith("console.error") for p in found) and any(p.startswith("exception") for p in found), found
    assert any("missing.png" in p for p in found if p.startswith("log")) and f"request: {(tmp_path / 'missing.png').as_uri()}" in found
    assert "request: http://127.0.0.1:9/x.png" in found


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_report_opens_in_chromium_without_errors(name, pages, browser, tmp_path):
    url = pages[name].as_uri()
    assert problems(browser.open(url), url) == []
    # a phone's width: nothing sticks out sideways (tables scroll inside their own box), every plot is drawn
    assert browser.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    widths = browser.evaluate("[...document.querySelectorAll('figure svg')].map(s => s.getBoundingClientRect().width)")
    assert len(widths) == 4 and all(200 < w <= PHONE["width"] for w in widths), widths
    assert browser.evaluate("document.querySelectorAll('table').length") >= 4
    shot = base64.b64decode(browser.send("Page.captureScreenshot", browser.session, format="png")["data"])
    assert png_size(shot) == (PHONE["width"], PHONE["height"]) and len(shot) > 20_000
    (tmp_path / f"{name}.png").write_bytes(shot)


def test_the_report_prints(pages, browser):
    url = pages["detection"].as_uri()
    assert problems(browser.open(url), url) == []
    pdf = base64.b64decode(browser.send("Page.printToPDF", browser.session, timeout=60)["data"])
    assert pdf.startswith(b"%PDF-") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type/Page") >= 2
