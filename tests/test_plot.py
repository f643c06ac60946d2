"""detbal.plot draws what matplotlib's own calls would draw, pixel for pixel.

The figures of ``detbal analyze`` are drawn faster than with ``Axes.errorbar`` and
bar histograms (issue 9), and must not look any different: each check renders both
ways with Agg and compares the pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from detbal import plot


def _pixels(draw: Callable[[Any], object]) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4))
    canvas = FigureCanvasAgg(fig)
    draw(fig.add_subplot())
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


@pytest.mark.parametrize("errors", ["x and y", "y"])
def test_error_bars_draw_what_errorbar_draws(errors: str) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=400), rng.normal(size=400)
    ex = rng.uniform(0.0, 0.4, 400) if errors == "x and y" else None
    ey = rng.uniform(0.0, 0.4, 400)

    def reference(ax: Any) -> None:
        ax.errorbar(x, y, xerr=ex, yerr=ey, fmt="o", ms=3, alpha=0.6, elinewidth=0.7)
        ax.plot([-3, 3], [-3, 3], "k--", lw=1, label="detailed balance")
        ax.legend(loc="upper left")

    def ours(ax: Any) -> None:
        plot._errorbar(ax, x, y, xerr=ex, yerr=ey, alpha=0.6, elinewidth=0.7)
        ax.plot([-3, 3], [-3, 3], "k--", lw=1, label="detailed balance")
        ax.legend(loc="upper left")

    a, b = _pixels(reference), _pixels(ours)
    assert (a != 255).any()  # something was drawn
    np.testing.assert_array_equal(a, b)


def test_histograms_draw_what_bar_histograms_draw() -> None:
    z = np.random.default_rng(3).normal(size=2000)
    bins = np.linspace(-4, 4, 41)

    def draw(ax: Any, **style: Any) -> None:
        ax.hist(z, bins=bins, density=True, alpha=0.6, label="3-cycles", **style)
        ax.hist(z[::2] * 1.3, bins=bins, density=True, alpha=0.5, label="basis cycles", **style)
        ax.legend(loc="upper left", fontsize=8)

    np.testing.assert_array_equal(_pixels(draw), _pixels(lambda ax: draw(ax, histtype="stepfilled")))
