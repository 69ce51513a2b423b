"""The cells whose verdicts or fork warning differ between the interpreters of one platform."""

from __future__ import annotations

from lab import matrix

# CPython added the "multi-threaded, use of fork()" DeprecationWarning in 3.12: an older
# interpreter's silence is no observation, and is not compared.
WARNING_SINCE = (3, 12)


def family(platform_id: str) -> str:
    """e.g. ``linux-x86_64`` for ``linux-x86_64-py3.12``."""
    return platform_id.rsplit("-py", 1)[0]


def warns(python: str | None) -> bool:
    """True when CPython ``python`` (e.g. "3.12.1") has the fork warning."""
    try:
        return tuple(int(p) for p in str(python).split(".")[:2]) >= WARNING_SINCE
    except ValueError:
        return False


def _seen(row: dict | None) -> dict | None:
    """What one interpreter observed in a cell: the verdicts of its trials, and the warning
    (None where it cannot fire); None when the cell has no trials there."""
    if row is None or row["status"] != matrix.RUN or not row.get("trials"):
        return None
    warning = row.get("fork_warning") if warns(row.get("python")) else None
    return {"verdicts": sorted(row["counts"]), "counts": row["counts"], "trials": row["trials"],
            "warning": warning, "warned": bool(warning and warning.get("fired"))
            if warning is not None else None}


def differences(platforms: list[dict], cells: list[list[str]]) -> list[dict]:
    """One entry per cell and platform family where two interpreters that both ran the cell
    saw different verdicts, or (both >= 3.12) one warned and the other did not."""
    found = []
    families: dict[str, list[dict]] = {}
    for entry in platforms:
        if entry["state"] == "run":
            families.setdefault(family(entry["id"]), []).append(entry)
    for name, entries in families.items():
        if len(entries) < 2:
            continue
        for scenario, launcher in cells:
            seen = {}
            for entry in entries:
                rows = {(r["scenario"], r["launcher"]): r for r in entry["rows"]}
                observed = _seen(rows.get((scenario, launcher)))
                if observed is not None:
                    seen[entry["id"]] = {**observed, "python": entry["platform"].get("python")}
            what = []
            if len({tuple(s["verdicts"]) for s in seen.values()}) > 1:
                what.append("verdict")
            if len({s["warned"] for s in seen.values() if s["warned"] is not None}) > 1:
                what.append("warning")
            if what:
                found.append({"family": name, "scenario": scenario, "launcher": launcher,
                              "differs": what, "by": seen})
    return found
