"""Peak memory of the running benchmark case."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """This process's own high-water mark (VmHWM). ``ru_maxrss`` is not: Linux keeps the larger of
    it and the parent's RSS across fork + exec, so a case run from a parent that built a 1 GiB
    volume would report the parent's memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
