"""`--scheduler`: the same conversion runs on a real dask-distributed cluster (local processes)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from bridge_xr.io.read import read_image
from bridge_xr_cli import _common
from bridge_xr_cli.main import app


@pytest.mark.slow
def test_convert_on_a_distributed_cluster(tmp_path, monkeypatch) -> None:
    from distributed import LocalCluster

    import bridge_xr.io._plan as oz

    monkeypatch.setattr(oz, "FUSE_MIN_BYTES", 0)  # exercise the fused shard-pyramid tasks too
    data = np.random.default_rng(0).integers(0, 4000, size=(8, 256, 192), dtype=np.uint16)
    tif = tmp_path / "a.tif"
    tifffile.imwrite(tif, data)
    store = tmp_path / "M.ome.zarr"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        try:
            r = CliRunner().invoke(
                app,
                [
                    "--scheduler",
                    cluster.scheduler_address,
                    "convert",
                    "microscopy",
                    str(tif),
                    str(store),
                    "--image",
                    "twophoton/d1/a",
                    "--pixel-size",
                    "1.2um",
                    "--z-step",
                    "3um",
                ],
            )
            assert r.exit_code == 0, r.output
            prefixes = set(cluster.scheduler.task_prefixes)
        finally:
            if _common._client is not None:
                _common._client.close()
                _common._client = None
    # the TIFF region reads (fused by dask with the shard-pyramid writes) ran on the workers
    assert any(p.startswith("original-tiff") for p in prefixes), prefixes
    np.testing.assert_array_equal(read_image(str(store), "twophoton/d1/a").values, data)
    lvl1 = read_image(str(store), "twophoton/d1/a", level=1).values
    assert lvl1.shape == (8, 128, 96)


def test_unreachable_scheduler_is_a_user_error() -> None:
    r = CliRunner().invoke(app, ["--scheduler", "tcp://127.0.0.1:9", "info", "x"])
    assert r.exit_code == 2
    assert "cannot reach dask scheduler" in r.stderr
