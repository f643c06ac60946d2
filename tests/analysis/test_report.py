"""Figures drawn in a child process are the files drawn in-process; failures fall back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detbal.analysis import report


def _values() -> np.ndarray:
    return np.random.default_rng(3).normal(0.0, 1.5, 400)


def test_child_process_draws_the_same_file(tmp_path: Path) -> None:
    x = _values()
    here = report.plot_histogram(x, float(x.mean()), float(x.std()), tmp_path / "here.png")
    with report.FigureMaker(background=True) as maker:
        maker.draw("hist", report.plot_histogram, x, float(x.mean()), float(x.std()),
                   tmp_path / "child.png")
        maker.draw("none", report.plot_histogram, x[:1], 0.0, 1.0, tmp_path / "never.png")
        got = maker.results()
    assert got == {"hist": tmp_path / "child.png", "none": None}
    assert here is not None and (tmp_path / "child.png").read_bytes() == here.read_bytes()
    assert not (tmp_path / "never.png").exists()


def test_unpicklable_job_is_drawn_here(tmp_path: Path) -> None:
    x = _values()

    def local_plot(path: Path) -> Path | None:  # a local function cannot be sent to a child
        return report.plot_histogram(x, float(x.mean()), float(x.std()), path)

    with report.FigureMaker(background=True) as maker:
        maker.draw("local", local_plot, tmp_path / "local.png")
        assert maker.results() == {"local": tmp_path / "local.png"}
    assert (tmp_path / "local.png").stat().st_size > 0


def test_foreground_maker_draws_on_results(tmp_path: Path) -> None:
    x = _values()
    maker = report.FigureMaker(background=False)
    maker.draw("hist", report.plot_histogram, x, float(x.mean()), float(x.std()), tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()  # nothing drawn until asked
    assert maker.results() == {"hist": tmp_path / "h.png"}
    maker.close()


def test_large_scatter_draws_a_fixed_subset() -> None:
    idx, note = report._subset(report.MAX_POINTS + 123)
    assert len(idx) == report.MAX_POINTS and np.all(np.diff(idx) > 0)
    assert note == f" ({report.MAX_POINTS:,} of {report.MAX_POINTS + 123:,} drawn)"
    again, _ = report._subset(report.MAX_POINTS + 123)
    np.testing.assert_array_equal(idx, again)
    small, none = report._subset(10)
    assert none == "" and list(small) == list(range(10))
