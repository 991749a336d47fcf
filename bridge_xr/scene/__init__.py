"""One subject opened once: :class:`Scene`, its :class:`TransformGraph`, and registration edges.

Examples
--------
>>> from bridge_xr import scene
>>> "open_scene" in scene.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "Scene": "core",
        "open_scene": "core",
        "TransformGraph": "graph",
        "map_points": "mapping",
        "path_between": "mapping",
        "add_registration": "edges",
        "set_current": "edges",
        "using": "chains",
        "describe": "info",
    },
)
