"""bridge_xr's computations pick dask's threads without importing dask-distributed."""

from __future__ import annotations

import subprocess
import sys

import dask
import dask.threaded

from bridge_xr._dask import scheduler


def test_a_configured_scheduler_or_a_possible_client_leaves_the_choice_to_dask() -> None:
    with dask.config.set(scheduler="synchronous"):
        assert scheduler() is None
    if "distributed" in sys.modules:  # a Client may exist: dask must look for it
        assert scheduler() is None
    else:
        assert scheduler() is dask.threaded.get


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
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["registered/micro", "False"]
