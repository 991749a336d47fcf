"""Object-store archives of studies: archive (SHA-256, resumable, manifest last), verify.

Examples
--------
>>> from bridge_xr import archive
>>> "verify_archive" in archive.__all__
True
"""

from __future__ import annotations

from bridge_xr._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "archive_study": "upload",
        "ArchiveResult": "upload",
        "ArchiveError": "upload",
        "scan_source": "upload",
        "verify_archive": "checking",
        "VerifyReport": "checking",
        "open_target": "target",
        "read_manifest": "manifest",
        "Manifest": "manifest",
        "MANIFEST_NAME": "target",
    },
)
