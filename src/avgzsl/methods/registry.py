"""Name -> method class. Methods register themselves; `avgzsl.methods` imports them all."""

from __future__ import annotations

from avgzsl.methods.base import Method

_METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    """Class decorator: make a Method subclass available as `name` in configs and the CLI."""

    def add(cls: type[Method]) -> type[Method]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {_METHODS[name].__name__}")
        cls.method_name = name
        _METHODS[name] = cls
        return cls

    return add


def get_method(name: str) -> type[Method]:
    import avgzsl.methods  # noqa: F401  (registers the built-in methods)

    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(sorted(_METHODS))}") from None


def list_methods() -> list[str]:
    import avgzsl.methods  # noqa: F401

    return sorted(_METHODS)
