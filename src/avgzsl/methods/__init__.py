"""Built-in methods: every module of this package (not starting with "_") is imported, and registers
the methods it defines with `@register_method`. Adding a method is adding a module; nothing here changes."""

import importlib
import pkgutil

from avgzsl.methods.base import DataDims, Method, OptimConfig
from avgzsl.methods.registry import get_method, list_methods, register_method

# Modules that hold shared pieces, not methods, are imported too (harmless: they register nothing).
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["DataDims", "Method", "OptimConfig", "get_method", "list_methods", "register_method"]
