"""Registering the steps with timm without importing it: `import roadmap` must stay free of torch (`run.py --help`
and config errors print in a second), and yet a user's `timm.create_model("roadmap_<step>")` must find them."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType


class _AfterTimm(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when timm is first imported, it lets timm load as usual, then imports `roadmap.models`,
    whose last line registers the steps (`roadmap.registry`). One use; it leaves `sys.meta_path` as it found it."""

    def find_spec(self, name: str, path: object = None, target: ModuleType | None = None):  # noqa: ANN201
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            load(module)
            if "roadmap.models" not in sys.modules:   # else roadmap.models is importing timm, and registers at its end
                importlib.import_module("roadmap.models")
        spec.loader.exec_module = exec_module   # type: ignore[method-assign]
        return spec


def register_with_timm() -> None:
    """Register the steps now if timm is loaded, else as soon as it is."""
    if "timm" in sys.modules:
        importlib.import_module("roadmap.models")
    elif not any(isinstance(f, _AfterTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimm())
