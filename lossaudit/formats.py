"""The output formats of each command, declared once: the choices of its ``--format`` option and of
the ``format`` key of its configuration section (:mod:`lossaudit.io.config`). The first is the
default."""

FORMATS: dict[str, tuple[str, ...]] = {
    "compare": ("text", "json", "markdown", "github", "junit", "html"),
    "lint": ("text", "json", "sarif", "github", "junit", "markdown"),
    "sweep": ("text", "json", "markdown"),
    "diff": ("text", "json"),
    "losses": ("text", "markdown", "json"),
}
