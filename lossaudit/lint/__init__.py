"""``lossaudit lint``: a behavioural audit of a user's focal-loss implementation.

The parent process (this package's :mod:`runner`) never imports the user's code: each target is
imported and probed in a child process (:mod:`worker`) with a time limit, and the findings come
back as plain data (:mod:`findings`).

The package is also callable: ``lossaudit.lint(...)`` is :func:`lossaudit.api.lint` (``lossaudit``
makes it so when it binds the subpackage: :mod:`lossaudit._callable`).
"""
