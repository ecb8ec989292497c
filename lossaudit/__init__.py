"""lossaudit: audit focal, GHM and cross-entropy losses on your predictions and your loss code.

``import lossaudit`` stays cheap: torch is imported only by the modules that compute.
"""

from lossaudit._version import __version__

__all__ = ["__version__", "save"]


def __getattr__(name: str):
    if name == "save":
        from lossaudit.dump import save

        return save
    raise AttributeError(f"module 'lossaudit' has no attribute {name!r}")
