"""Plots for team leaders: PNG bytes (matplotlib, Agg backend; no display needed)."""
from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import metrics  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def validity_plot(within: Sequence[bool], threshold: float, window: int, title: str = "Seed validity") -> bytes:
    """Rolling validity over the marker's seeds, with the suspension threshold."""
    fig, ax = plt.subplots(figsize=(6, 3))
    x = np.arange(1, len(within) + 1)
    ax.plot(x, metrics.rolling([1.0 if w else 0.0 for w in within], window), marker="o", label=f"rolling {window}")
    ax.scatter(x, [1.02 if w else -0.02 for w in within], c=["tab:green" if w else "tab:red" for w in within],
               s=12, label="seed within tolerance")
    ax.axhline(threshold, color="tab:red", linestyle="--", label="threshold")
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlabel("seed #")
    ax.set_ylabel("validity")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def drift_plot(z: Sequence[float], alarm: metrics.Alarm, title: str = "Drift (CUSUM)") -> bytes:
    """The standardised stream with its CUSUM (or EWMA) path and the alarm limit."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 4.5), sharex=True)
    x = np.arange(1, len(z) + 1)
    a1.plot(x, z, ".", color="grey")
    a1.plot(x, metrics.rolling(z, 10), color="tab:blue", label="rolling mean (10)")
    a1.axhline(0, color="black", linewidth=0.5)
    a1.set_ylabel("z")
    a1.legend(fontsize=7)
    if alarm.method == "cusum":
        a2.plot(x, alarm.path_hi, label="S⁺ (lenient)")
        a2.plot(x, alarm.path_lo, label="S⁻ (severe)")
        a2.axhline(alarm.limit, color="tab:red", linestyle="--", label="h")
    else:
        a2.plot(x, alarm.path_hi, label="EWMA")
        a2.plot(x, alarm.path_lo, color="tab:red", linestyle="--", label="−limit")
        a2.plot(x, [-v for v in alarm.path_lo], color="tab:red", linestyle="--", label="+limit")
    if alarm.fired and alarm.index is not None:
        a2.axvline(alarm.index + 1, color="tab:red", linewidth=1)
    a2.set_xlabel("mark #")
    a2.legend(fontsize=7)
    a1.set_title(title)
    return _png(fig)


def marker_means_plot(markers: list[dict], group_mean: float | None, title: str = "Marker means ± SD") -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3))
    names = [m.get("username") or str(m["user_id"]) for m in markers]
    means = [m["mean"] or 0 for m in markers]
    sds = [m["sd"] or 0 for m in markers]
    ax.errorbar(range(len(names)), means, yerr=sds, fmt="o", capsize=3)
    if group_mean is not None:
        ax.axhline(group_mean, color="grey", linestyle="--", label="group mean")
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_title(title)
    return _png(fig)


def matrix_plot(matrix, labels: Sequence[str], title: str = "First × second read") -> bytes:
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("second")
    ax.set_ylabel("first")
    ax.set_title(title)
    return _png(fig)


def histogram(scores: Sequence[float], max_points: float, step: float, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 2.8))
    bins = np.arange(-step / 2, max_points + step, step)
    ax.hist(scores, bins=bins, color="tab:blue", edgecolor="white")
    ax.set_xlabel("score")
    ax.set_ylabel("responses")
    ax.set_title(title)
    return _png(fig)


def whatif_plot(rows: list[dict], title: str = "Policy what-if") -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3))
    variants = sorted({r["variant"] for r in rows})
    for v in variants:
        rs = [r for r in rows if r["variant"] == v]
        t = [float(r["threshold"]) for r in rs]
        ax.plot(t, [r["third_rate"] for r in rs], marker="o", label=f"{v}: third")
        ax.plot(t, [r["arbitration_rate"] for r in rs], marker="x", linestyle="--", label=f"{v}: arbitration")
    ax.set_xlabel("threshold T (points)")
    ax.set_ylabel("rate")
    ax.set_title(title)
    ax.legend(fontsize=6)
    return _png(fig)
