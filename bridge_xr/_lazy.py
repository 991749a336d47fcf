"""Lazy attributes for package ``__init__`` modules (PEP 562): nothing heavy at import.

``bridge --help`` and ``import bridge_xr`` stay fast; a name is imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def attach(
    package: str, names: Mapping[str, str], submodules: tuple[str, ...] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``.

    ``names`` maps each public name to the module (relative to ``package``) that defines it;
    ``submodules`` are subpackages/modules reachable as attributes.

    Examples
    --------
    >>> get, dir_, all_ = attach("json", {"dumps": "encoder"})
    >>> all_
    ['dumps']
    """
    public = sorted([*names, *submodules])

    def __getattr__(name: str) -> Any:
        if name in names:
            module = importlib.import_module(f"{package}.{names[name]}")
            return getattr(module, name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        msg = f"module {package!r} has no attribute {name!r}"
        raise AttributeError(msg)

    def __dir__() -> list[str]:
        return public

    return __getattr__, __dir__, public
