"""Bootstrap replicates and test simulations on Dask (``scheduler=``, ``--scheduler``): the
same numbers as one thread, since every replicate has its own seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import detbal
from detbal.cli import main

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """One single-threaded worker in this process, reached over TCP on loopback, so every
    replicate function is pickled to it as it would be to a remote worker."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as c:
        yield c


def _numbers(res: detbal.AnalysisResult) -> dict:
    d = res.to_dict()
    d.pop("timings")
    return d


def _same(a: detbal.AnalysisResult, b: detbal.AnalysisResult) -> None:
    assert _numbers(a) == _numbers(b)
    np.testing.assert_array_equal(a.potential.stderr, b.potential.stderr)
    np.testing.assert_array_equal(a.potential.bootstrap_V, b.potential.bootstrap_V)


def test_dask_gives_the_serial_numbers(driven_chain, cluster) -> None:
    kernel = detbal.estimate_kernel(driven_chain[1])
    options = dict(seed=3, bootstrap=8, test_simulations=15)
    serial = detbal.analyze(kernel, n_jobs=1, **options)
    with distributed.Client(cluster.scheduler_address) as client:
        ticks: list[tuple[int, str]] = []

        class Bars:  # counts the progress calls: replicates finished on the workers tick here
            def progress(self, total, desc):
                from contextlib import contextmanager

                @contextmanager
                def bar():
                    yield lambda n=1: ticks.append((n, desc))

                return bar()

        dask = detbal.analyze(kernel, scheduler=client, progress=Bars(), **options)
        assert client.status == "running"  # a client passed in is left open
    _same(serial, dask)
    assert serial.potential.stderr[np.isfinite(serial.potential.stderr)].size > 0
    assert np.isfinite(serial.global_test.p_value) and serial.nonequilibrium.n_bootstrap == 8
    per_bar = {desc: sum(n for n, d in ticks if d == desc) for _, desc in ticks}
    assert per_bar == {"cycle-test simulations": 15, "bootstrap of V": 8, "cycle-affinity bootstrap": 8}


def test_dask_likelihood_and_deviance_and_early_stop(reversible_chain, cluster) -> None:
    kernel = detbal.estimate_kernel(reversible_chain[1])
    options = dict(seed=5, bootstrap=4, test_simulations=45, estimator="likelihood", deviance=True,
                   stop_early=True)
    threads = detbal.analyze(kernel, n_jobs=2, **options)
    dask = detbal.analyze(kernel, scheduler=cluster.scheduler_address, **options)
    _same(threads, dask)
    np.testing.assert_array_equal(threads.likelihood.stderr_bootstrap, dask.likelihood.stderr_bootstrap)
    assert np.isfinite(threads.likelihood.stderr_bootstrap).any()
    assert threads.deviance is not None and np.isfinite(threads.deviance.p.value)


def _analyze(data: Path, out: Path, *extra: str) -> int:
    return main(["-q", "analyze", str(data), "--out", str(out), "--bootstrap", "6",
                 "--test-simulations", "12", "--no-figures", "--seed", "2", *extra])


def test_cli_scheduler_same_summary(tmp_path: Path, driven_chain, cluster) -> None:
    data = tmp_path / "t.csv"
    counts = driven_chain[1]
    data.write_text("source,target,count\n" + "".join(
        f"{s},{'' if t is None else t},{n}\n" for s, t, n in counts.to_rows()))
    assert _analyze(data, tmp_path / "plain", "--jobs", "1") == 0
    assert _analyze(data, tmp_path / "dask", "--scheduler", cluster.scheduler_address) == 0
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("plain", "dask"))
    a.pop("timings"), b.pop("timings")
    assert a == b
    plain, dask = ((tmp_path / d / "potential.csv").read_text() for d in ("plain", "dask"))
    assert plain == dask


def test_cli_bad_scheduler_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    data = tmp_path / "t.csv"
    data.write_text("source,target,count\na,b,5\nb,a,4\nb,c,3\nc,a,6\na,c,2\nc,b,2\n")
    assert _analyze(data, tmp_path / "out", "--scheduler", "tcp://127.0.0.1:9") == 2
    err = capsys.readouterr().err.strip()
    assert "cannot connect to the Dask scheduler at tcp://127.0.0.1:9" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert _analyze(data, tmp_path / "out", "--scheduler", "local:0") == 2
    assert "positive number of workers" in capsys.readouterr().err
