"""One row per registration of a study: landmark count, RMSE and leave-one-out TRE (Fig. 1E).

The table feeds ``bridge stats`` (``--response n_landmarks --by sequence --test kruskal-dunn``):
the paper compares the landmarks found and the registration error across MRI sequences. The
``sequence`` of a registration is its fixed image's acquisition sequence when the store records
one, else the last part of the fixed image's path (``invivo_mri/d060/T2w`` -> ``T2w``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bridge_xr.errors import InvalidInputError
from bridge_xr.io._store import StoreLike, resolve_store
from bridge_xr.io.subject import read_subject

__all__ = ["registration_table"]

COLUMNS = ["subject", "registration", "fixed", "moving", "session", "sequence", "model",
           "n_landmarks", "rmse_um", "loo_tre_rms_um", "rater", "current"]  # fmt: skip


def _rows(store: Any, where: Any) -> list[dict[str, Any]]:
    from bridge_xr.io.study import subject_name

    meta = read_subject(store)
    subject = subject_name(store, where)
    rows = []
    for name, reg in sorted(meta.registrations.items()):
        fixed = meta.images.get(reg.fixed)
        seq = (fixed.acquisition.sequence if fixed else None) or reg.fixed.rstrip("/").rsplit(
            "/", 1
        )[-1]
        rows.append({
            "subject": subject,
            "registration": name,
            "fixed": reg.fixed,
            "moving": reg.moving,
            "session": fixed.session if fixed else None,
            "sequence": seq,
            "model": reg.model,
            "n_landmarks": int(reg.report.get("n_landmarks", len(reg.landmarks.landmarks))),
            "rmse_um": reg.report.get("rmse_um"),
            "loo_tre_rms_um": reg.report.get("loo_tre_rms_um"),
            "rater": reg.landmarks.rater,
            "current": name in meta.current_registrations,
        })  # fmt: skip
    return rows


def registration_table(
    where: StoreLike, *, live: bool = False, output: str | Path | None = None
) -> pd.DataFrame:
    """Every registration of a subject store or of a study's stores (columns :data:`COLUMNS`).

    Parameters
    ----------
    where : str, path or store
        A subject store, or a study folder / archived prefix of them.
    live : bool
        Read an object-store study without an archive manifest (see ``subject_stores``).
    output : str or path, optional
        CSV (or ``.parquet``) to write.

    Examples
    --------
    >>> from bridge_xr.testing import tiny_scene
    >>> t = registration_table(tiny_scene(registered=True).store)
    >>> t[["registration", "fixed", "n_landmarks", "sequence"]].values.tolist()
    [['micro_to_mri', 'mri', 5, 'mri']]
    """
    from bridge_xr.io.study import is_study, subject_stores

    rows: list[dict[str, Any]] = []
    if isinstance(where, str | Path) and is_study(where):
        for s in subject_stores(where, live=live):
            rows += _rows(resolve_store(s), s)
    else:
        rows = _rows(resolve_store(where), where if isinstance(where, str | Path) else "subject")
    if not rows:
        raise InvalidInputError(f"no registrations in {str(where)!r}; run `bridge register` first")
    df = pd.DataFrame(rows, columns=COLUMNS)
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(out, index=False) if out.suffix.lower() == ".parquet" else df.to_csv(
            out, index=False
        )
    return df
