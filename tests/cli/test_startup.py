"""`bridge` starts without the numerical stack: commands import what they use when they run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("numpy", "scipy", "dask", "xarray", "zarr", "pandas", "SimpleITK", "torch", "pint")


@pytest.mark.parametrize("argv", [["--help"], ["resample", "--help"], ["convert", "mri", "--help"]])
def test_help_loads_no_numerical_library(argv: list[str]) -> None:
    code = (
        "import sys, contextlib, io\n"
        f"sys.argv = ['bridge', *{argv!r}]\n"
        "import bridge_xr_cli.main as m\n"
        "with contextlib.redirect_stdout(io.StringIO()) as buf, contextlib.suppress(SystemExit):\n"
        "    m.run()\n"
        "import json\n"
        f"print(json.dumps([buf.getvalue().count('Usage'), sorted(k for k in {HEAVY!r} if k in sys.modules)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    usage, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert usage >= 1  # the help was printed
    assert loaded == []
