"""A pytest helper: assert that a focal-loss implementation lints clean.

from lossaudit.testing import assert_focal_loss

def test_our_focal_loss_matches_the_reference():
    assert_focal_loss("mypkg/losses.py:FocalLoss", init={"alpha": 0.25, "gamma": 2.0})
"""

from __future__ import annotations

from typing import Any


def assert_focal_loss(target: Any, *, fail_on: str = "error", **options: Any) -> None:  # lossaudit: ignore -- a test helper, not a loss
    """Lint ``target`` (a ``"file.py:Symbol"``/``"package.module:Symbol"`` string, a class, a
    function, or an instance) with :func:`lossaudit.lint`'s ``options``, and raise
    ``AssertionError`` listing every finding, as ``lossaudit lint`` prints them, when one is at or
    above ``fail_on`` or the target could not be audited.

    Example:
        >>> from lossaudit.testing import assert_focal_loss
        >>> assert_focal_loss("lossaudit.losses:focal")  # passes: torchvision's formula
    """
    from lossaudit.api import lint

    report = lint(target, **options)
    if not report.ok(fail_on):
        raise AssertionError(f"lossaudit lint found defects at or above {fail_on!r}:\n{report.text()}")
