"""Built-in methods. Importing this package registers them."""

from avgzsl.methods.base import DataDims, Method, OptimConfig
from avgzsl.methods.registry import get_method, list_methods, register_method

__all__ = ["DataDims", "Method", "OptimConfig", "get_method", "list_methods", "register_method"]
