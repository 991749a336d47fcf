"""The multiview-stitcher baseline of ``bench_tiles``, run by a Python that has it installed.

multiview-stitcher is not a dependency of bridge_xr (heavy, pre-alpha API). Install it in its own
environment (``python3.11 -m venv /tmp/mvs && /tmp/mvs/bin/pip install multiview-stitcher``)
and pass ``--mvs-python /tmp/mvs/bin/python`` to ``bench_tiles``. This script reads the tiles
that ``bench_tiles`` dumped as ``.npy`` (memory-mapped) with their stage positions, registers
them (phase correlation, its defaults) and fuses them into a zarr array, and prints one JSON
line: times, peak RSS (VmHWM) and the registered positions.

Usage: ``python _mvs_case.py TILES_DIR OUT_ZARR [register-only]``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    import dask.array as da
    import numpy as np
    from multiview_stitcher import fusion, msi_utils, registration
    from multiview_stitcher import spatial_image_utils as si_utils

    folder, out = Path(sys.argv[1]), sys.argv[2]
    meta = json.loads((folder / "tiles.json").read_text())
    spacing = dict(zip("zyx", meta["spacing"], strict=True))
    msims = []
    for k, pos in enumerate(meta["stage_um"]):
        arr = da.from_array(np.load(folder / f"t{k:03d}.npy", mmap_mode="r"), chunks=(64, 256, 256))
        sim = si_utils.get_sim_from_array(
            arr[None], dims=["c", "z", "y", "x"], scale=spacing, c_coords=["ch0"],
            translation=dict(zip("zyx", pos, strict=True)), transform_key="stage",
        )  # fmt: skip
        msims.append(msi_utils.get_msim_from_sim(sim, scale_factors=[]))
    t0 = time.perf_counter()
    registration.register(
        msims, reg_channel="ch0", transform_key="stage", new_transform_key="registered"
    )
    t_reg = time.perf_counter() - t0
    positions = []  # the tile's own origin (its stage position) moved by the registered affine
    for msim, pos in zip(msims, meta["stage_um"], strict=True):
        affine = np.asarray(msi_utils.get_transform_from_msim(msim, transform_key="registered"))
        affine = affine.reshape(-1, 4, 4)[0]
        positions.append((affine[:3, :3] @ np.asarray(pos) + affine[:3, 3]).tolist())
    if len(sys.argv) > 3 and sys.argv[3] == "register-only":
        print(json.dumps({"register_s": t_reg, "positions_um": positions}))
        return 0
    t1 = time.perf_counter()
    fused = fusion.fuse(
        [msi_utils.get_sim_from_msim(m) for m in msims],
        transform_key="registered",
        output_chunksize={"z": 64, "y": 256, "x": 256},
        output_zarr_url=out,
    )
    if not Path(out).exists():  # older releases return a lazy result only
        da.to_zarr(fused.data, out, overwrite=True)
    t_fuse = time.perf_counter() - t1
    print(json.dumps({"register_s": t_reg, "fuse_s": t_fuse, "wall_s": t_reg + t_fuse,
                      "shape": list(fused.data.shape), "peak_rss_mib": _peak_mib(),
                      "positions_um": positions}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
