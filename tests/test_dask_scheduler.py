"""bridge_xr's computations pick dask's threads without importing dask-distributed."""

from __future__ import annotations

import subprocess
import sys
import threading

import dask
import dask.threaded
import numpy as np

from bridge_xr._dask import rechunk_method, scheduler, write_scheduler


def _printed(code: str) -> list[str]:
    """What ``code`` prints in a fresh interpreter, split into words."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_a_configured_scheduler_or_a_possible_client_leaves_the_choice_to_dask() -> None:
    with dask.config.set(scheduler="synchronous"):
        assert scheduler() is None
    if "distributed" in sys.modules:  # a Client may exist: dask must look for it
        assert scheduler() is None
    else:
        assert scheduler() is dask.threaded.get


def test_writes_run_on_one_thread_more_than_cores_unless_the_user_chose() -> None:
    import dask.array as da
    from dask.system import CPU_COUNT

    with dask.config.set(scheduler="synchronous"):
        assert write_scheduler() is None
    with dask.config.set(num_workers=1):
        assert write_scheduler() is scheduler()  # the configured count is used as it is
    if "distributed" in sys.modules:
        assert write_scheduler() is None
        return
    # CPU_COUNT + 1 tasks that each wait for all the others: only that many threads finish it
    n = CPU_COUNT + 1
    barrier = threading.Barrier(n, timeout=30)
    seen: set[int] = set()

    def wait_for_all(block):
        barrier.wait()
        seen.add(threading.get_ident())
        return block

    blocks = da.zeros(n, chunks=1).map_blocks(wait_for_all, dtype=float, meta=np.empty(0))
    out = blocks.compute(scheduler=write_scheduler())
    assert out.shape == (n,)
    assert len(seen) == n


def test_rechunk_method_is_tasks_until_a_client_could_exist() -> None:
    with dask.config.set({"array.rechunk.method": "p2p"}):
        assert rechunk_method() is None  # the user's choice stands
    assert rechunk_method() == (None if "distributed" in sys.modules else "tasks")


def test_resample_into_a_store_does_not_import_distributed() -> None:
    # dask imports distributed (about 0.3 s) on a compute given no scheduler, to look for a
    # client; before distributed is imported no client can exist, so bridge_xr names threads
    code = (
        "import sys\n"
        "from bridge_xr.testing import tiny_scene\n"
        "from bridge_xr.resampling import resample_into\n"
        "meta = resample_into(tiny_scene(registered=True), moving='micro', onto='mri',\n"
        "                     image='registered/micro')\n"
        "print(meta.path, 'distributed' in sys.modules)\n"
    )
    assert _printed(code) == ["registered/micro", "False"]


def test_lesion_tables_and_thresholds_do_not_import_distributed() -> None:
    code = (
        "import sys\n"
        "import dask.array as da, numpy as np\n"
        "from bridge_xr.lesions.coloc import otsu_of\n"
        "from bridge_xr.lesions.components import component_table\n"
        "m = np.zeros((4, 8, 8), bool); m[1:3, 2:5, 2:5] = True; m[0, 7, 7] = True\n"
        "t = component_table(da.from_array(m, chunks=(2, 4, 4)), (1.0, 1.0, 1.0),\n"
        "                    {'v': da.from_array(m * 2.0, chunks=(2, 4, 4))})\n"
        "th = otsu_of(da.from_array(np.r_[np.zeros(50), np.ones(50)], chunks=25))\n"
        "print(len(t), 0 < th < 1, 'distributed' in sys.modules)\n"
    )
    assert _printed(code) == ["2", "True", "False"]


def test_a_rechunking_write_and_a_density_table_do_not_import_distributed() -> None:
    # a rechunk given no method imports distributed to look for a client, like a compute
    code = (
        "import sys\n"
        "import dask, dask.array as da, numpy as np, zarr\n"
        "from bridge_xr.io.downsample import store_shard_aligned\n"
        "from bridge_xr.extract import density\n"
        "from bridge_xr.testing import tiny_scene\n"
        "t = zarr.create_array(zarr.storage.MemoryStore(), shape=(8, 8), chunks=(4, 4),\n"
        "                      shards=(8, 8), dtype='u1')\n"
        "store_shard_aligned(da.ones((8, 8), dtype='u1', chunks=(2, 2)), t)\n"
        "ds = density(tiny_scene(registered=True), microscopy='micro', mri='mri')\n"
        "cov = ds['coverage'].data.compute(scheduler=dask.get)  # the caller's own compute\n"
        "print(int(t[...].sum()), cov.max() > 0, 'distributed' in sys.modules)\n"
    )
    assert _printed(code) == ["64", "True", "False"]
