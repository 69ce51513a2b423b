"""docs/matrix.png: one heatmap panel per platform, scenarios × launchers, coloured by verdict."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from lab import matrix
from lab.evidence import write_atomic

VERDICT_COLOURS = {
    "ok": "#4caf50",
    "error": "#fdd835",
    "data-loss": "#8d6e63",
    "hang": "#fb8c00",
    "deadlock": "#d32f2f",
    "crash": "#7b1fa2",
    "interrupted": "#90a4ae",
}
DARK = {"deadlock", "crash", "data-loss"}  # white text on these
NOT_RUN_COLOUR = "#cfcfcf"
NO_CELL_COLOUR = "#ffffff"

CELL_W, CELL_H = 0.46, 0.30  # inches
LEFT, GAP, RIGHT = 2.5, 0.35, 0.2
TOP, BOTTOM = 0.75, 2.75  # title; launcher names and the legend
ROW_GAP = 2.2  # below a row of panels that has another under it: its launcher names
CAPTION_Y = 0.54  # inches above the bottom edge, under the legend's line
DPI = 110


def _cell_face(row: dict | None) -> tuple[str, str, str | None]:
    """(colour, label, hatch) of one cell of one platform."""
    if row is None or row["status"] in (matrix.NOT_RUN, matrix.PENDING):
        return NOT_RUN_COLOUR, "–", None
    if row["status"] == matrix.ILLUSTRATIVE:
        return NOT_RUN_COLOUR, "illus.", "////"
    if row["status"] == matrix.PREDICTED:
        return NOT_RUN_COLOUR, f"pred.\n{row['expected']}", "...."
    colour = VERDICT_COLOURS.get(row.get("observed") or "", NOT_RUN_COLOUR)
    if row["status"] == matrix.RECORDED:
        return colour, "rec.", "////"
    hits = row["counts"].get(row["expected"], 0)
    label = f"{hits}/{row['trials']}"
    if row["status"] == matrix.ERROR:
        label = "err " + label
    elif row["status"] == matrix.INTERRUPTED:
        label = "int " + label
    return colour, label, None


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
            mismatch = (row is not None and row["status"] == matrix.RUN
                        and row["rate"] is not None and row["rate"] < 1.0)
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=colour, hatch=hatch,
                                   edgecolor="black" if mismatch else "white",
                                   linewidth=2.0 if mismatch else 1.0))
            observed = row.get("observed") if row else None
            ax.text(x + 0.5, y + 0.5, label, ha="center", va="center", fontsize=6.5,
                    fontweight="bold" if mismatch else "normal",
                    color="white" if observed in DARK else "black")
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


def figure(merged: dict):
    """The matplotlib Figure (Agg canvas, no pyplot state) for a merged document."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = _rows_of_panels(merged["platforms"])
    across = max(len(row) for row in rows)
    width = CELL_W * max(len(merged["launchers"]), 1)
    height = CELL_H * max(len(merged["scenarios"]), 1)
    fig_w = LEFT + across * width + (across - 1) * GAP + RIGHT
    fig_h = len(rows) * (TOP + height + ROW_GAP) - ROW_GAP + BOTTOM
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    for down, row in enumerate(rows):
        bottom = BOTTOM + (len(rows) - 1 - down) * (TOP + height + ROW_GAP)
        for index, entry in enumerate(row):
            _panel(fig, entry, merged, LEFT + index * (width + GAP), bottom, width, height,
                   index == 0)
    handles = [Patch(facecolor=c, label=v) for v, c in VERDICT_COLOURS.items()
               if v != "interrupted"]
    handles += [Patch(facecolor=NOT_RUN_COLOUR, label="not run"),
                Patch(facecolor="white", hatch="////", edgecolor="black",
                      label="recorded (captured transcript)"),
                Patch(facecolor=NOT_RUN_COLOUR, hatch="////", edgecolor="black",
                      label="illustrative (hand-built transcript: not an observation)"),
                Patch(facecolor=NOT_RUN_COLOUR, hatch="....", edgecolor="black",
                      label="predicted (the mechanism, not an observation)"),
                Patch(facecolor="white", edgecolor="black", linewidth=2.0,
                      label="not always as expected")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7,
               frameon=False, bbox_to_anchor=(0.5, 0.005))
    fig.text(0.5, CAPTION_Y / fig_h, "colour: the verdict observed most often; text: trials "
             "with the expected verdict / trials", ha="center", fontsize=7)
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
