"""The report's figures: matplotlib figures rendered as deterministic inline SVG text.

Every figure is drawn on a fresh :class:`matplotlib.figure.Figure` (no
``pyplot``, no global figure state) inside an ``rc_context`` that makes the
SVG deterministic:

* ``svg.hashsalt`` is set per figure (``"kpkeys-sim:" + name``), so the ids
  matplotlib derives for clip paths and markers are the same on every run and
  differ between the figures of one page;
* ``svg.fonttype = "none"``: text stays text (smaller, selectable), so no
  glyph ids are shared between figures;
* the ``Date`` metadata is dropped and the ``<metadata>`` block, XML prolog
  and DOCTYPE are stripped before inlining.

The same data therefore gives byte-identical SVG.  The root ``<svg>`` loses
its fixed ``width``/``height`` (the ``viewBox`` stays) and gets a class, so
the page's CSS scales it to the screen (a phone included), and a ``<title>``
for screen readers.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import matplotlib
from matplotlib.figure import Figure

__all__ = [
    "PALETTE",
    "figure_to_svg",
    "grouped_hbar_svg",
    "heatmap_svg",
    "stacked_hbar_svg",
    "timeseries_svg",
]

#: Colours of the data series (Okabe–Ito, readable by colour-blind readers).
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)

#: rcParams of every figure (typed ``Any``: matplotlib types rcParams keys as literals).
_RC: Any = {
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 8.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10.0,
    "axes.titleweight": "bold",
    "figure.dpi": 100.0,
}

#: Figure width: about a phone screen at 96 dpi, so text is drawn near its real size.
_WIDTH_IN = 4.8


def _new_figure(height_in: float) -> Figure:
    return Figure(figsize=(_WIDTH_IN, max(1.6, height_in)), layout="constrained")


def figure_to_svg(fig: Figure, name: str, title: str) -> str:
    """Render ``fig`` as deterministic inline SVG (see the module docstring)."""
    buf = io.StringIO()
    rc: Any = {**_RC, "svg.hashsalt": f"kpkeys-sim:{name}"}
    with matplotlib.rc_context(rc):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, count=1, flags=re.S)
    head_end = svg.index(">")
    head = svg[:head_end]
    head = re.sub(r'\s(width|height)="[^"]*"', "", head)
    head += f' class="fig" role="img" aria-labelledby="fig-{name}-title"'
    body = _prefix_ids(svg[head_end + 1 :], name)
    return f'{head}><title id="fig-{name}-title">{escape(title)}</title>' + body.rstrip() + "\n"


def _prefix_ids(svg: str, name: str) -> str:
    """Prefix every ``id`` (and every reference to one) with ``name`` so figures never clash."""
    svg = re.sub(r'\sid="([^"]+)"', lambda m: f' id="{name}-{m.group(1)}"', svg)
    svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{name}-{m.group(1)}"', svg)
    return re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{name}-{m.group(1)})", svg)


def grouped_hbar_svg(
    name: str,
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
) -> str:
    """Horizontal bars: one group per label, one bar per series (values annotated)."""
    n_series = max(1, len(series))
    height = 0.9 + 0.22 * len(labels) * n_series
    with matplotlib.rc_context(_RC):
        fig = _new_figure(height)
        ax = fig.add_subplot()
        bar_h = 0.8 / n_series
        for s_idx, (s_name, values) in enumerate(series.items()):
            ys = [i + (s_idx - (n_series - 1) / 2) * bar_h for i in range(len(labels))]
            bars = ax.barh(
                ys, list(values), height=bar_h * 0.92, label=s_name, color=PALETTE[s_idx % 8]
            )
            ax.bar_label(bars, labels=[f"{v:+.1f}" for v in values], padding=2, fontsize=7)
        ax.set_yticks(range(len(labels)), labels=list(labels))
        ax.invert_yaxis()
        ax.axvline(0.0, color="#444444", linewidth=0.8)
        ax.set_xlabel(xlabel)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
        ax.margins(x=0.15)
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        if len(series) > 1:
            fig.legend(
                loc="outside lower center", ncols=min(2, len(series)), frameon=False, fontsize=8
            )
    return figure_to_svg(fig, name, title)


def stacked_hbar_svg(
    name: str,
    title: str,
    labels: Sequence[str],
    components: Mapping[str, Sequence[float]],
    xlabel: str,
) -> str:
    """Horizontal stacked bars: one bar per label, one segment per component."""
    height = 1.1 + 0.3 * len(labels) + 0.12 * len(components)
    with matplotlib.rc_context(_RC):
        fig = _new_figure(height)
        ax = fig.add_subplot()
        pos = [0.0] * len(labels)  # positive segments stack rightwards from 0,
        neg = [0.0] * len(labels)  # negative ones leftwards
        for c_idx, (c_name, values) in enumerate(components.items()):
            lefts = [p if v >= 0 else n + v for v, p, n in zip(values, pos, neg, strict=True)]
            ax.barh(
                range(len(labels)),
                [abs(v) for v in values],
                left=lefts,
                height=0.7,
                label=c_name,
                color=PALETTE[c_idx % 8],
            )
            pos = [p + max(v, 0.0) for v, p in zip(values, pos, strict=True)]
            neg = [n + min(v, 0.0) for v, n in zip(values, neg, strict=True)]
        ax.axvline(0.0, color="#444444", linewidth=0.8)
        ax.set_yticks(range(len(labels)), labels=list(labels))
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        fig.legend(loc="outside lower center", ncols=min(3, max(1, len(components))), frameon=False)
    return figure_to_svg(fig, name, title)


def heatmap_svg(
    name: str,
    title: str,
    rows: Sequence[str],
    cols: Sequence[str],
    values: Sequence[Sequence[float]],
    cell_text: Sequence[Sequence[str]],
    colorbar_label: str,
) -> str:
    """A heat map of ``values`` in [0, 1] (rows × cols) with a text in each cell."""
    height = 1.6 + 0.3 * len(rows)
    with matplotlib.rc_context(_RC):
        fig = _new_figure(height)
        ax = fig.add_subplot()
        mesh = ax.pcolormesh(
            [[float(v) for v in r] for r in values],
            cmap="RdYlGn_r",
            vmin=0.0,
            vmax=1.0,
            edgecolors="white",
            linewidth=1.0,
        )
        for i, row in enumerate(cell_text):
            for j, text in enumerate(row):
                v = float(values[i][j])
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white" if v > 0.75 or v < 0.2 else "black",
                )
        ax.set_xticks([j + 0.5 for j in range(len(cols))], labels=list(cols))
        ax.set_yticks([i + 0.5 for i in range(len(rows))], labels=list(rows))
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
        ax.invert_yaxis()
        fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
        for spine in ax.spines.values():
            spine.set_visible(False)
        cbar = fig.colorbar(mesh, ax=ax, orientation="horizontal", shrink=0.7, aspect=30)
        cbar.set_label(colorbar_label)
    return figure_to_svg(fig, name, title)


def timeseries_svg(
    name: str,
    title: str,
    x: Sequence[int],
    lines: Mapping[str, Sequence[float]],
    markers: Mapping[str, Sequence[int]],
    xlabel: str,
    ylabel: str,
    marker_totals: Mapping[str, int] | None = None,
) -> str:
    """Lines over ``x`` plus event markers (one rug row per marker kind) below them.

    A rug row is labelled with ``marker_totals[kind]`` (the number of events,
    when the markers were thinned for drawing) or the number of markers.
    """
    with matplotlib.rc_context(_RC):
        fig = _new_figure(3.4)
        ax, rug = fig.subplots(2, 1, sharex=True, height_ratios=[3.0, 1.0])
        for idx, (l_name, ys) in enumerate(lines.items()):
            ax.plot(list(x), list(ys), label=l_name, color=PALETTE[idx % 8], linewidth=1.2)
        ax.set_ylabel(ylabel)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
        ax.grid(color="#dddddd", linewidth=0.6)
        if len(lines) > 1:
            ax.legend(frameon=False, fontsize=8)
        kinds = list(markers)
        for idx, kind in enumerate(kinds):
            xs = list(markers[kind])
            rug.scatter(
                xs,
                [idx] * len(xs),
                marker="|",
                s=60,
                color=PALETTE[(idx + 1) % 8],
                linewidths=1.2,
            )
        totals = dict(marker_totals or {})
        rug.set_yticks(
            range(len(kinds)), labels=[f"{k} ({totals.get(k, len(markers[k]))})" for k in kinds]
        )
        rug.set_ylim(-0.7, max(0.7, len(kinds) - 0.3))
        rug.invert_yaxis()
        rug.set_xlabel(xlabel)
        rug.grid(axis="x", color="#eeeeee", linewidth=0.6)
    return figure_to_svg(fig, name, title)
