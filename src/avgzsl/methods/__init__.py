"""Built-in methods. Importing this package registers them."""

from avgzsl.methods.base import DataDims, Method, OptimConfig
from avgzsl.methods.registry import get_method, list_methods, register_method

from avgzsl.methods import avca  # noqa: E402,F401  (registers "avca")
from avgzsl.methods import daan  # noqa: E402,F401  (registers "daan")

__all__ = ["DataDims", "Method", "OptimConfig", "get_method", "list_methods", "register_method"]
