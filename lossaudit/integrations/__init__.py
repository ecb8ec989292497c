"""Audit while training: lossaudit inside a training loop (issue 25; docs/training.md).

- :mod:`lossaudit.integrations.audit`: the framework-free part. :class:`~lossaudit.integrations.audit.EpochAudits`
  records each epoch through a :class:`lossaudit.Recorder`, audits it with :func:`lossaudit.compare` in a
  background thread, compares it with the previous epoch or a baseline report, and says whether
  the shares moved too far; :func:`~lossaudit.integrations.audit.headline` gives the numbers logged.
- :mod:`lossaudit.integrations.lightning`: a PyTorch Lightning ``Callback`` (``pip install 'lossaudit[lightning]'``).
- :mod:`lossaudit.integrations.transformers`: a Hugging Face ``TrainerCallback`` (``pip install 'lossaudit[transformers]'``).

Nothing is imported here: each integration imports its framework when it is imported itself, and
``import lossaudit`` imports none of them.
"""
