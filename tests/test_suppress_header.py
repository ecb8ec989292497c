"""A suppression comment counts anywhere on a definition's header: the ``def``/``class`` line, the
lines of a signature that a formatter (black, ``ruff format``) split, or the decorators above it;
not in the body."""

from __future__ import annotations

import textwrap

import pytest

from lossaudit.lint.suppress import ALL, _header_comments, silenced, suppressed_codes


def write(tmp_path, text):
    path = tmp_path / "losses.py"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.torch_free
def test_comment_after_a_split_signature_counts(tmp_path):
    path = write(
        tmp_path,
        """\
        def focal(
            logits, targets, alpha: float = 0.25, gamma: float = 2.0
        ) -> float:  # lossaudit: ignore[FL001, fl019]
            return 0.0
        """,
    )
    assert suppressed_codes(_header_comments(path, 1)) == {"FL001", "FL019"}
    assert not silenced(path, 1)


@pytest.mark.torch_free
def test_comment_inside_the_parentheses_counts(tmp_path):
    path = write(
        tmp_path,
        """\
        class FocalLoss(
            object,  # lossaudit: ignore
        ):
            pass
        """,
    )
    assert silenced(path, 1)


@pytest.mark.torch_free
def test_decorated_definition_reads_the_def_line(tmp_path):
    path = write(
        tmp_path,
        """\
        import functools

        @functools.lru_cache(
            maxsize=None,
        )
        @staticmethod
        def focal(x):  # lossaudit: ignore
            return x
        """,
    )
    assert silenced(path, 3)


@pytest.mark.torch_free
def test_the_body_does_not_count(tmp_path):
    path = write(
        tmp_path,
        """\
        def focal(x):
            # lossaudit: ignore
            return x  # lossaudit: ignore[FL001]


        def other(x):  # lossaudit: ignore
            return x
        """,
    )
    assert suppressed_codes(_header_comments(path, 1)) == frozenset()
    assert suppressed_codes(_header_comments(path, 6)) is ALL


@pytest.mark.torch_free
def test_unreadable_or_untokenizable_source(tmp_path):
    assert _header_comments(tmp_path / "missing.py", 1) == ""
    path = write(tmp_path, 'def focal(x):  # lossaudit: ignore\n    return """unterminated\n')
    assert silenced(path, 1)  # the header ends on its first line: the broken rest is never read
    path = write(tmp_path, "def f(\n    x,  # lossaudit: ignore\n")
    assert not silenced(path, 1)  # an unclosed signature: only its first line is read
