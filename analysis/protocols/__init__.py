"""Protocol analyzers: importing this package imports every module in it, so that each one's
``register(AnalyzerSpec(...))`` has run and :data:`REGISTRY` is complete.

A module that fails to import is an error, not a silently missing analyzer: the exception
propagates (the test suite imports this package).
"""

from __future__ import annotations

import importlib
import pkgutil

from analysis.protocols.base import REGISTRY, Analyzer, AnalyzerContext, AnalyzerSpec, register

__all__ = ["REGISTRY", "Analyzer", "AnalyzerContext", "AnalyzerSpec", "register", "load_all"]


def load_all() -> dict[str, AnalyzerSpec]:
    """Import every submodule/subpackage of this package (idempotent); returns the registry."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return REGISTRY


load_all()
