"""docs/matrix.png: one panel per platform that ran, scenarios × launchers.

A cell's colour says whether it was observed *as expected* (every trial), which is what a
reader scans for; its text says the verdict and how many trials had it. A deadlock the catalog
expects is green, not red: the lab reproduced the bug it set out to. Platforms that did not
run here are one compact strip of text under the panels, not panels of grey.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from lab import matrix
from lab.evidence import write_atomic

AS_EXPECTED = "#66bb6a"  # every trial had the expected verdict
NOT_AS_EXPECTED = "#e53935"  # at least one trial had another
ERROR_COLOUR = "#fdd835"  # a lab error stopped the cell
INTERRUPTED_COLOUR = "#90a4ae"
RECORDED_COLOUR = "#aed581"  # a transcript captured elsewhere (not run here)
DARK = {NOT_AS_EXPECTED}  # white text on these
NOT_RUN_COLOUR = "#e0e0e0"
SHORT = {"ok": "ok", "deadlock": "deadl.", "hang": "hang", "crash": "crash", "error": "error",
         "data-loss": "loss", "interrupted": "int."}
NO_CELL_COLOUR = "#ffffff"

CELL_W, CELL_H = 0.46, 0.30  # inches
LEFT, GAP, RIGHT = 2.5, 0.35, 0.2
TOP, BOTTOM = 0.75, 2.75  # title; launcher names and the legend
ROW_GAP = 2.2  # below a row of panels that has another under it: its launcher names
CAPTION_Y = 0.54  # inches above the bottom edge, under the legend's line
DPI = 110


def _cell_face(row: dict | None) -> tuple[str, str, str | None]:
    """(colour, label, hatch) of one cell of one platform: colour for as expected or not,
    text for the verdict observed most often and the trials that had the expected one."""
    if row is None or row["status"] in (matrix.NOT_RUN, matrix.PENDING):
        return NOT_RUN_COLOUR, "–", None
    if row["status"] == matrix.ILLUSTRATIVE:
        return NOT_RUN_COLOUR, "illus.", "////"
    if row["status"] == matrix.PREDICTED:
        return NOT_RUN_COLOUR, f"pred.\n{SHORT.get(row['expected'], row['expected'])}", "...."
    observed = SHORT.get(row.get("observed") or "", row.get("observed") or "?")
    if row["status"] == matrix.RECORDED:
        return RECORDED_COLOUR, f"rec.\n{observed}", "////"
    hits = row["counts"].get(row["expected"], 0)
    label = f"{observed}\n{hits}/{row['trials']}"
    if row["status"] == matrix.ERROR:
        return ERROR_COLOUR, f"err\n{hits}/{row['trials']}", None
    if row["status"] == matrix.INTERRUPTED:
        return INTERRUPTED_COLOUR, f"int.\n{hits}/{row['trials']}", None
    as_expected = row["rate"] is not None and row["rate"] >= 1.0
    return (AS_EXPECTED if as_expected else NOT_AS_EXPECTED), label, None


def _panel(fig, entry: dict, merged: dict, left: float, bottom: float, width: float,
           height: float, show_names: bool) -> None:
    from matplotlib.patches import Rectangle

    scenarios, launchers = merged["scenarios"], merged["launchers"]
    exists = {tuple(c) for c in merged["cells"]}
    rows = {(r["scenario"], r["launcher"]): r for r in entry["rows"]}
    fig_w, fig_h = fig.get_size_inches()
    ax = fig.add_axes([left / fig_w, bottom / fig_h, width / fig_w, height / fig_h])
    ax.set_xlim(0, len(launchers))
    ax.set_ylim(len(scenarios), 0)
    for y, scenario in enumerate(scenarios):
        for x, launcher in enumerate(launchers):
            if (scenario, launcher) not in exists:
                ax.add_patch(Rectangle((x, y), 1, 1, facecolor=NO_CELL_COLOUR,
                                       edgecolor="#eeeeee", linewidth=0.5))
                continue
            row = rows.get((scenario, launcher))
            colour, label, hatch = _cell_face(row)
            mismatch = colour == NOT_AS_EXPECTED
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=colour, hatch=hatch,
                                   edgecolor="white", linewidth=1.0))
            ax.text(x + 0.5, y + 0.5, label, ha="center", va="center", fontsize=5.5,
                    linespacing=0.95, fontweight="bold" if mismatch else "normal",
                    color="white" if colour in DARK else "black")
    ax.set_xticks([x + 0.5 for x in range(len(launchers))])
    ax.set_xticklabels(launchers, rotation=90, fontsize=7)
    ax.set_yticks([y + 0.5 for y in range(len(scenarios))])
    ax.set_yticklabels(scenarios if show_names else [], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    state = "" if entry["state"] == "run" else f"\n({entry['state']})"
    trials = Counter(r["trials"] for r in entry["rows"] if r["status"] == matrix.RUN)
    if entry["state"] == "run" and trials:
        most = trials.most_common(1)[0][0]
        state = f"\n{most} trials per cell" + (", some cells other" if len(trials) > 1 else "")
    ax.set_title(f"{entry['id']}{state}", fontsize=9)


def _rows_of_panels(platforms: list[dict]) -> list[list[dict]]:
    """Rows of panels: a platform family's interpreters side by side (e.g. linux-x86_64 py3.10
    to py3.13), smaller families sharing a row as long as it is no wider than the widest."""
    from lab.matrix.compare import family

    families: dict[str, list[dict]] = {}
    for entry in platforms:
        families.setdefault(family(entry["id"]), []).append(entry)
    across = max(len(members) for members in families.values())
    rows: list[list[dict]] = []
    for members in families.values():
        if rows and len(rows[-1]) + len(members) <= across:
            rows[-1] += members
        else:
            rows.append(list(members))
    return rows


def ran(entry: dict) -> bool:
    """A platform with at least one cell measured here (the others are the strip)."""
    return any(row["status"] in matrix.MEASURED for row in entry["rows"])


def not_run_line(entry: dict) -> str:
    """One platform of the strip: its id, state, and what stands in for its cells."""
    shown = Counter(row["status"] for row in entry["rows"]
                    if row["status"] in (matrix.RECORDED, matrix.ILLUSTRATIVE, matrix.PREDICTED))
    extra = ", ".join(f"{n} {status}" for status, n in sorted(shown.items()))
    return f"{entry['id']}: {entry['state']}" + (f" ({extra}; docs/RESULTS.md)" if extra else "")


STRIP_LINE = 0.2  # inches a line of the not-run strip takes


def figure(merged: dict):
    """The matplotlib Figure (Agg canvas, no pyplot state) for a merged document."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    measured = [entry for entry in merged["platforms"] if ran(entry)]
    strip = [entry for entry in merged["platforms"] if not ran(entry)]
    rows = _rows_of_panels(measured) if measured else []
    across = max((len(row) for row in rows), default=1)
    width = CELL_W * max(len(merged["launchers"]), 1)
    height = CELL_H * max(len(merged["scenarios"]), 1)
    strip_h = STRIP_LINE * (len(strip) + 1) if strip else 0.0
    fig_w = LEFT + across * width + (across - 1) * GAP + RIGHT
    fig_h = len(rows) * (TOP + height + ROW_GAP) - ROW_GAP + BOTTOM + strip_h if rows \
        else BOTTOM + strip_h + TOP
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    for down, row in enumerate(rows):
        bottom = BOTTOM + strip_h + (len(rows) - 1 - down) * (TOP + height + ROW_GAP)
        for index, entry in enumerate(row):
            _panel(fig, entry, merged, LEFT + index * (width + GAP), bottom, width, height,
                   index == 0)
    if strip:
        fig.text(0.5, (CAPTION_Y + 0.3) / fig_h, "\n".join(
                     ["Not run here:"] + [not_run_line(entry) for entry in strip]),
                 ha="center", va="bottom", fontsize=7)
    handles = [Patch(facecolor=AS_EXPECTED, label="as expected, every trial"),
               Patch(facecolor=NOT_AS_EXPECTED, label="NOT as expected in a trial"),
               Patch(facecolor=ERROR_COLOUR, label="stopped by a lab error"),
               Patch(facecolor=NOT_RUN_COLOUR, label="not run"),
               Patch(facecolor=RECORDED_COLOUR, hatch="////", edgecolor="black",
                     label="recorded (captured transcript)"),
               Patch(facecolor=NOT_RUN_COLOUR, hatch="////", edgecolor="black",
                     label="illustrative (not an observation)"),
               Patch(facecolor=NOT_RUN_COLOUR, hatch="....", edgecolor="black",
                     label="predicted (not an observation)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.005))
    fig.text(0.5, CAPTION_Y / fig_h, "colour: observed as the catalog expects, or not; text: "
             "the verdict observed most often, and trials with the expected verdict / trials",
             ha="center", fontsize=7)
    return fig


def write_png(merged: dict, path: Path) -> Path:
    """Render ``merged`` to ``path`` atomically. The same document gives the same bytes: Agg,
    fixed size and DPI, bundled font, no timestamp or version in the PNG metadata."""
    import matplotlib

    path = Path(path)
    with matplotlib.rc_context({"font.family": "DejaVu Sans", "hatch.linewidth": 0.6}):
        fig = figure(merged)
        image = io.BytesIO()
        fig.savefig(image, format="png", dpi=DPI, metadata={"Software": None})
    write_atomic(path, image.getvalue())
    return path
