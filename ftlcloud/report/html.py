"""The HTML page of a report: one self-contained file, inline CSS, relative links to the PNGs.

No script and no CDN: the report is stored as a folder and must open from disk or the store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np

from ftlcloud.report.model import THRESHOLD_KEYS, IterationSummary, ReportInputs

#: Table 2 header cells (units in the header so the cells can hold the bare ranges).
TABLE2_HEADERS: tuple[str, ...] = (
    "Iteration",
    "Elevation (m)",
    "Slope (°)",
    "Aspect (°)",
    "|Deformation rate| (mm/a)",
    "Candidates",
    "Accepted",
    "Rejected",
    "New FTLs",
)

AMPLITUDE_NOTE = (
    "Seasonal amplitude here is the paper's Eq. 2, A = 2·√(c² + d²), the peak-to-peak seasonal "
    "displacement in millimetres. MintPy's <code>annualAmplitude</code> is √(c² + d²) in metres: "
    "half of A, and in other units (A [mm] = 2000 × annualAmplitude [m])."
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem;
     margin-top: 2rem; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.7rem; text-align: right; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.95rem; margin-top: 0.3rem; }
.note { background: #f7f7f0; border-left: 4px solid #c9b458; padding: 0.5rem 0.9rem; }
.empty { color: #777; font-style: italic; }
"""


@dataclass(frozen=True)
class FigureEntry:
    """One figure of the page: its key in the report folder and its caption."""

    key: str
    """Relative file name, e.g. "fig_geometry.png"."""
    title: str
    """Short heading shown above the caption."""
    caption: str
    """What the figure shows and how to read it (plain text)."""


def render_index(
    inputs: ReportInputs, figures: Sequence[FigureEntry], *, iteration: int | None = None
) -> str:
    """The report page as HTML text; ``iteration`` set for a per-iteration report."""
    heading = escape(inputs.title)
    scope = f"iteration {iteration}" if iteration is not None else "whole run"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{heading} — {escape(scope)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{heading}</h1>",
        (
            f'<p class="meta">Run <code>{escape(inputs.run_id)}</code> · {escape(scope)} · '
            f"CRS <code>{escape(inputs.crs)}</code></p>"
        ),
    ]
    parts.extend(f"<p>{escape(line)}</p>" for line in inputs.notes)
    parts.append(_summary_section(inputs))
    parts.append(_metrics_section(inputs, iteration))
    parts.append(_table2_section(inputs.iterations))
    parts.append("<h2>Figures</h2>")
    parts.extend(_figure_html(entry) for entry in figures)
    parts.append("<h2>Notes</h2>")
    parts.append(f'<p class="note">{AMPLITUDE_NOTE}</p>')
    parts.append(
        "<p>Deformation rate is the Eq. 1 trend b (mm/a) along the line of sight; "
        "|velocity| bins are left-closed (10 mm/a counts in 10–20). "
        "<em>hidden</em>: ΔNDVI &gt; −0.1; <em>small</em>: area &lt; 10 ha.</p>"
    )
    parts.extend(["</body>", "</html>", ""])
    return "\n".join(parts)


def _summary_section(inputs: ReportInputs) -> str:
    ftls = inputs.ftls
    rows: list[tuple[str, str]] = [("FTLs in the inventory", str(len(ftls)))]
    if len(ftls):
        iteration = np.asarray(ftls["iteration"], dtype=float)
        n_initial = int(np.sum(~np.isfinite(iteration)))
        rows += [
            ("from the initial inventory", str(n_initial)),
            ("found by the iterations", str(len(ftls) - n_initial)),
            ("hidden (ΔNDVI > −0.1)", str(int(np.sum(np.asarray(ftls["hidden"], dtype=bool))))),
            ("small (< 10 ha)", str(int(np.sum(np.asarray(ftls["small"], dtype=bool))))),
            ("total area (ha)", f"{float(np.nansum(np.asarray(ftls['area_ha'], float))):,.1f}"),
        ]
    cands = inputs.candidates
    rows.append(("candidates offered", str(len(cands))))
    if len(cands):
        rows.append(("candidates accepted", str(int(np.sum(_as_bool(cands["accepted"]))))))
    body = "".join(f'<tr><td class="text">{escape(k)}</td><td>{v}</td></tr>' for k, v in rows)
    return f'<h2>Summary</h2>\n<table id="summary"><tbody>{body}</tbody></table>'


def _as_bool(values: Any) -> np.ndarray:
    # Undecided candidates come as None/NaN; they are not accepted.
    return np.array([bool(v) if v is not None and v == v else False for v in values], dtype=bool)


def _metrics_section(inputs: ReportInputs, iteration: int | None) -> str:
    parts = ["<h2>Validation</h2>"]
    ver = inputs.verification
    if ver is not None:
        n_tp, n_fp, n_fn = (int(ver[k]) for k in ("n_tp", "n_fp", "n_fn"))
        n_total = n_tp + n_fp + n_fn
        rates = {
            "TPR": _pct(ver, "tpr_pct", n_tp, n_total),
            "FPR": _pct(ver, "fpr_pct", n_fp, n_total),
            "FNR": _pct(ver, "fnr_pct", n_fn, n_total),
        }
        parts.append(
            "<p>Verification records (Eq. 3–5; N = N<sub>TP</sub> + N<sub>FP</sub> + "
            "N<sub>FN</sub>):</p>"
        )
        parts.append(
            '<table id="verification"><thead><tr><th>N<sub>TP</sub></th><th>N<sub>FP</sub></th>'
            "<th>N<sub>FN</sub></th><th>N</th><th>TPR (%)</th><th>FPR (%)</th><th>FNR (%)</th>"
            f"</tr></thead><tbody><tr><td>{n_tp}</td><td>{n_fp}</td><td>{n_fn}</td>"
            f"<td>{n_total}</td><td>{rates['TPR']}</td><td>{rates['FPR']}</td>"
            f"<td>{rates['FNR']}</td></tr></tbody></table>"
        )
    match = inputs.object_match
    if match is not None:
        rule = escape(str(match.get("rule", "unspecified")))
        parts.append(f"<p>Object match against the reference inventory (rule: {rule}):</p>")
        cells = "".join(
            f"<td>{_frac_pct(match.get(k))}</td>" for k in ("precision", "recall", "f1")
        )
        parts.append(
            '<table id="object-match"><thead><tr><th>Precision (%)</th><th>Recall (%)</th>'
            f"<th>F1 (%)</th></tr></thead><tbody><tr>{cells}</tr></tbody></table>"
        )
    if iteration is not None:
        summary = next((s for s in inputs.iterations if s.iteration == iteration), None)
        if summary is not None and (summary.recall is not None or summary.object_precision):
            parts.append(
                f"<p>After iteration {iteration}: object recall "
                f"{_frac_pct(summary.recall)} %, object precision "
                f"{_frac_pct(summary.object_precision)} %.</p>"
            )
    if ver is None and match is None:
        parts.append(
            '<p class="empty">No verification records or reference inventory were given '
            "for this report.</p>"
        )
    return "\n".join(parts)


def _pct(ver: Mapping[str, float], key: str, count: int, n_total: int) -> str:
    """The given rate, else count / N; an em dash when N is 0."""
    value = ver.get(key)
    if value is None:
        if n_total == 0:
            return "—"
        value = 100.0 * count / n_total
    return f"{float(value):.1f}"


def _frac_pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100.0 * float(value):.1f}"


def table2_rows(iterations: Sequence[IterationSummary]) -> list[list[str]]:
    """Table 2 cells (as text), one row per iteration in iteration order."""
    rows = []
    for s in sorted(iterations, key=lambda s: s.iteration):
        labels = [str(s.thresholds.get(k, "—")) for k in THRESHOLD_KEYS]
        counts = [s.n_candidates, s.n_accepted, s.n_rejected, s.n_new_ftls]
        rows.append([str(s.iteration), *labels, *(str(c) for c in counts)])
    return rows


def _table2_section(iterations: Sequence[IterationSummary]) -> str:
    head = "".join(
        f'<th class="text">{escape(h)}</th>' if 1 <= i <= 4 else f"<th>{escape(h)}</th>"
        for i, h in enumerate(TABLE2_HEADERS)
    )
    rows = table2_rows(iterations)
    if not rows:
        body = (
            f'<tr><td class="text empty" colspan="{len(TABLE2_HEADERS)}">'
            "no iterations yet</td></tr>"
        )
    else:
        body = "".join(
            "<tr>"
            + "".join(
                f'<td class="text">{escape(c)}</td>' if 1 <= i <= 4 else f"<td>{escape(c)}</td>"
                for i, c in enumerate(row)
            )
            + "</tr>"
            for row in rows
        )
    return (
        "<h2>Iterations (Table 2)</h2>\n"
        "<p>Masking thresholds of each iteration and what the review made of its candidates.</p>\n"
        f'<table id="table2"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _figure_html(entry: FigureEntry) -> str:
    key = escape(entry.key, quote=True)
    return (
        f'<figure id="{key}">'
        f'<a href="{key}"><img src="{key}" alt="{escape(entry.title, quote=True)}"></a>'
        f"<figcaption><strong>{escape(entry.title)}.</strong> {escape(entry.caption)}"
        "</figcaption></figure>"
    )
