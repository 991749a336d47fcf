"""bridge_xr: correlative MRI-microscopy imaging on calibrated OME-Zarr 0.6 stores.

The Python API in one screen::

    import bridge_xr as bx
    scene = bx.open_scene("M001.ome.zarr")            # local, s3:// or a zarr store; lazy
    t2w = scene["invivo_mri/d060/T2w"]                # xarray.DataArray (dask), physical coords
    scene.graph.path("twophoton/d060/angiogram", "invivo_mri/d060/T2w")
    pts = scene.map_points(df, src="twophoton/d060/angiogram", dst="invivo_mri/d060/T2w")
    reg = bx.register.fit("tps", landmarks)           # then scene.add_registration(reg, ...)
    out = bx.resample(scene, moving="twophoton/d060/angiogram", onto="invivo_mri/d060/T2w")
    scene.write_image(out, "registered/d060/angiogram")
    table = bx.extract.table(scene, mri=..., microscopy=[...])   # lazy dask DataFrame

Every ``bridge`` command is one call of a function of these subpackages (see
``docs/architecture.md`` for the layers).

Examples
--------
>>> import bridge_xr as bx
>>> bx.__version__
'0.1.0'
>>> "open_scene" in bx.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__version__ = "0.1.0"

__getattr__, __dir__, _public = attach(
    __name__,
    {
        "Scene": "scene.core",
        "open_scene": "scene.core",
        "TransformGraph": "scene.graph",
        "resample": "resampling.blockwise",
        "resample_into": "resampling.write",
    },
    submodules=(
        "errors",
        "extract",
        "io",
        "learn",
        "model",
        "register",
        "report",
        "resampling",
        "scene",
        "stats",
        "testing",
        "tiles",
    ),
)
__all__ = ["__version__", *_public]
