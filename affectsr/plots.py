"""matplotlib for writing figures to files (reports, study, training curves), loaded on first use."""
from __future__ import annotations

from types import ModuleType

__all__ = ["pyplot"]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend: files only, no display needed."""
    import matplotlib  # lazy: costs ~0.5 s to import, and only the figure writers need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
