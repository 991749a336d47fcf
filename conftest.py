"""Session-wide test settings for the tests and the doctests alike."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_pytest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Doctests and phantoms make their folders with ``tempfile``: keep them in pytest's basetemp.

    pytest removes old basetemps, so a run leaves no folders behind in the system's temporary
    directory.
    """
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempfile"))
    yield
    tempfile.tempdir = saved
