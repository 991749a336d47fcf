"""The ``bridge`` command line: a typer shell over the bridge_xr library."""
