"""detbal.parallel: one map seam for evo's evaluations and the analysis's replicates."""

from __future__ import annotations

import pytest

from detbal.errors import DetbalError
from detbal.parallel import DaskBackend, PoolBackend, SerialBackend, make_backend


def _square(x: int) -> int:
    return x * x


def test_make_backend_reads_the_scheduler() -> None:
    assert isinstance(make_backend(None), SerialBackend)
    assert isinstance(make_backend("serial"), SerialBackend)
    pool = make_backend("processes:3")
    assert isinstance(pool, PoolBackend) and pool.workers == 3
    assert make_backend("processes", workers=5).workers == 5
    for bad in ("processes:0", "processes:x", "local:0", "local:-2"):
        with pytest.raises(DetbalError, match="positive number of workers"):
            make_backend(bad)
    for bad in ("", 3.5):
        with pytest.raises(DetbalError, match="unknown scheduler"):
            make_backend(bad)


def test_serial_map_ticks_once_per_item() -> None:
    ticks: list[int] = []
    assert SerialBackend().map(_square, [1, 2, 3], ticks.append) == [1, 4, 9]
    assert ticks == [1, 1, 1]


def test_dask_client_maps_in_order_and_ticks() -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        backend = make_backend(client)
        assert isinstance(backend, DaskBackend)
        ticks: list[int] = []
        assert backend.map(_square, list(range(12)), ticks.append) == [x * x for x in range(12)]
        assert len(ticks) == 12
        assert backend.map(_square, []) == []
        backend.close()  # a client it was given is left open
        assert client.status == "running"


def test_a_scheduler_that_does_not_answer_is_one_line() -> None:
    pytest.importorskip("distributed")
    with pytest.raises(DetbalError) as err:
        DaskBackend.connect("tcp://127.0.0.1:9", timeout=1)
    assert "cannot connect to the Dask scheduler at tcp://127.0.0.1:9" in str(err.value)
    assert "\n" not in str(err.value)


def test_without_dask_a_scheduler_says_what_to_install(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    for scheduler in ("local:1", "tcp://127.0.0.1:8786"):
        with pytest.raises(DetbalError, match=r"needs dask: pip install 'dask\[distributed\]'"):
            make_backend(scheduler)
    assert isinstance(make_backend(None), SerialBackend)  # the default needs no dask
