"""`tune --plot`: per model, the distribution of per-source peaks on a log scale with
the current (dashed) and suggested (solid) thresholds as vertical lines.

matplotlib is an optional dependency (`pip install 'zeekndm[plot]'`); without it
`--plot` fails before any work with that command. The Agg backend is used: no display
is needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from zeekndm.errors import ZeekNDMError
from zeekndm.tune import ModelReport, TuneReport

_COLOURS = {"low": "#2b8cbe", "medium": "#fdae61", "high": "#d7191c", "critical": "#7b3294"}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ZeekNDMError(
            "--plot needs matplotlib: pip install 'zeekndm[plot]' (or pip install matplotlib)"
        ) from None
    return plt


def check_plot_target(target: str) -> None:
    """Fail before reading any history: no matplotlib, or nowhere to write."""
    _pyplot()
    path = Path(target)
    if path.is_dir():
        return
    if path.suffix.lower() != ".png":
        raise ZeekNDMError("--plot takes a FILE.png or an existing directory", file=target)
    if not path.resolve().parent.is_dir():
        raise ZeekNDMError("the directory of --plot does not exist", file=target)


def _draw(ax: Any, r: ModelReport) -> None:
    peaks = [s.peak for s in r.stats.sources.values()]
    slow = [s.slow_peak for s in r.stats.sources.values()]
    top = max(peaks + slow + [n for _, n in r.suggestion.levels] + [2])
    edges = [1.0]
    while edges[-1] < top * 1.5:
        edges.append(edges[-1] * 10**0.125)
    if peaks:
        ax.hist(peaks, bins=edges, color="#525252", alpha=0.8, label="peak in window")
        ax.hist(
            slow,
            bins=edges,
            histtype="step",
            color="#31a354",
            linewidth=1.2,
            label="slow path (until idle)",
        )
    ax.set_xscale("log")
    ax.set_xlim(0.9, top * 1.5)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    for severity, n in r.suggestion.current:
        ax.axvline(n, color=_COLOURS.get(severity, "k"), linestyle="--", linewidth=1.0)
    for severity, n in r.suggestion.levels:
        ax.axvline(
            n,
            color=_COLOURS.get(severity, "k"),
            linestyle="-",
            linewidth=1.8,
            label=f"{severity} {n} (suggested)",
        )
    ax.set_title(
        f"{r.model.name}: {len(peaks):,} sources (dashed: current, solid: suggested)",
        fontsize=9,
    )
    ax.set_xlabel(f"distinct {r.model.count} per {r.model.track_by.replace('_', ' and ')}")
    ax.set_ylabel("sources")
    ax.legend(fontsize=7, loc="upper right")


def plot_report(report: TuneReport, target: str) -> list[str]:
    """Write the plot(s): one PNG with a panel per model that counted anything, or one
    PNG per such model in a directory. Returns the paths written."""
    plt = _pyplot()
    shown = [r for r in report.models if r.stats.sources]
    out = Path(target)
    if not shown:  # still a picture, saying why it is empty
        fig, ax = plt.subplots(figsize=(8, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no model counted any record in this history", ha="center")
        path = out / "tune.png" if out.is_dir() else out
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [str(path)]
    if out.is_dir():
        written = []
        for r in shown:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            _draw(ax, r)
            fig.tight_layout()
            path = out / f"{r.model.name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(str(path))
        return written
    cols = 1 if len(shown) == 1 else 2
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, 4.2 * rows), squeeze=False)
    for i, r in enumerate(shown):
        _draw(axes[i // cols][i % cols], r)
    for j in range(len(shown), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return [str(out)]
