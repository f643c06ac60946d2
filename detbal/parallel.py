"""Where independent tasks run: the builtin map, a process pool, or a Dask cluster.

One seam for everything that maps a function over independent items: GP fitness
evaluations (:mod:`detbal.evo.gp`), bootstrap replicates and test simulations
(:func:`detbal.analysis.resample.map_replicates`).  A backend's ``map(fn, items)``
returns ``[fn(x) for x in items]`` in order, wherever it runs them, so results never
depend on the backend; ``progress(1)``, when given, is called once per finished item
from the calling thread.

:func:`make_backend` reads a ``scheduler``: ``None``/``"serial"``, ``"processes[:N]"``,
``"local[:N]"`` (a Dask ``LocalCluster`` of N single-threaded worker processes started
for the call and stopped after it), a Dask scheduler address (``"tcp://host:8786"``) or a
``distributed.Client``.  Dask (``pip install 'dask[distributed]'``) is imported only for
the last three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from detbal.errors import DetbalError

Progress = Callable[[int], object] | None


class MapBackend(Protocol):
    name: str

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], progress: Progress = None) -> list[Any]: ...

    def close(self) -> None: ...


def _tick_all(out: list[Any], progress: Progress) -> list[Any]:
    if progress:
        for _ in out:
            progress(1)
    return out


class SerialBackend:
    """The builtin ``map``."""

    name = "serial"

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], progress: Progress = None) -> list[Any]:
        out = []
        for item in items:
            out.append(fn(item))
            if progress:
                progress(1)
        return out

    def close(self) -> None:
        pass


_WORKER_FN: Callable[[Any], Any] | None = None


def _install(fn: Callable[[Any], Any]) -> None:
    global _WORKER_FN
    _WORKER_FN = fn


def _call_installed(item: Any) -> Any:
    assert _WORKER_FN is not None
    return _WORKER_FN(item)


class PoolBackend:
    """A process pool (spawned); the function, with its data, is sent once per worker."""

    name = "processes"

    def __init__(self, workers: int = 2) -> None:
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None
        self._fn: Callable[[Any], Any] | None = None

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], progress: Progress = None) -> list[Any]:
        import multiprocessing

        if self._pool is None or fn is not self._fn:
            self.close()
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_install, initargs=(fn,),
            )
            self._fn = fn
        items = list(items)
        chunk = max(1, len(items) // (4 * self.workers))
        out = []
        for result in self._pool.map(_call_installed, items, chunksize=chunk):
            out.append(result)
            if progress:
                progress(1)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _apply(item: Any, fn: Callable[[Any], Any]) -> Any:
    return fn(item)


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise DetbalError("a Dask scheduler needs dask: pip install 'dask[distributed]'") from None
    return distributed


class DaskBackend:
    """A ``dask.distributed`` client; the function (with its data) is scattered once to
    every worker, then each item is one task."""

    name = "dask"

    def __init__(self, client: Any, own: bool = False, cluster: Any = None) -> None:
        self.client = client
        self._own = own
        self._cluster = cluster
        self._fn: Any = None
        self._future: Any = None

    @classmethod
    def connect(cls, address: str, timeout: float = 10) -> DaskBackend:
        """A client of the scheduler at ``address``; one-line error if none answers."""
        distributed = _distributed()
        _reachable(address, timeout)
        try:
            client = distributed.Client(address, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DetbalError(f"cannot connect to the Dask scheduler at {address}: {detail}") from None
        return cls(client, own=True)

    @classmethod
    def local(cls, workers: int) -> DaskBackend:
        """A ``LocalCluster`` of ``workers`` single-threaded processes, stopped by :meth:`close`."""
        distributed = _distributed()
        cluster = distributed.LocalCluster(n_workers=max(1, int(workers)), threads_per_worker=1,
                                           processes=True, dashboard_address=None)
        return cls(distributed.Client(cluster), own=True, cluster=cluster)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], progress: Progress = None) -> list[Any]:
        items = list(items)
        if not items:
            return []
        if fn is not self._fn:
            self._future = self.client.scatter(fn, broadcast=True, hash=False)
            self._fn = fn
        futures = self.client.map(_apply, items, fn=self._future, pure=False)
        if progress:
            from distributed import as_completed

            for _ in as_completed(futures):
                progress(1)
        return self.client.gather(futures)

    def close(self) -> None:
        if self._own:
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()


def _reachable(address: str, timeout: float) -> None:
    """Fail at once, with the reason, where a TCP address refuses or does not resolve
    (the client would retry until its time-out and then say only that it timed out)."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme != "tcp":
            return
        host, port = parse_host_port(location)
    except ValueError as exc:
        raise DetbalError(f"cannot connect to the Dask scheduler at {address}: {exc}") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise DetbalError(f"cannot connect to the Dask scheduler at {address}: {reason}") from None


def _workers(spec: str, default: int, name: str) -> int:
    _, _, n = spec.partition(":")
    if not n:
        return default
    try:
        value = int(n)
    except ValueError:
        value = 0
    if value < 1:
        raise DetbalError(f"scheduler {spec!r}: {name}:N needs a positive number of workers")
    return value


def make_backend(scheduler: Any = None, workers: int = 2) -> MapBackend:
    """A backend for ``scheduler``: ``None``/``"serial"``, ``"processes[:N]"``,
    ``"local[:N]"``, a Dask scheduler address, or a Dask ``Client`` (used, not closed).
    ``workers``: N where the string leaves it out."""
    if scheduler is None or scheduler == "serial":
        return SerialBackend()
    if hasattr(scheduler, "scatter") and hasattr(scheduler, "gather"):
        return DaskBackend(scheduler)
    if isinstance(scheduler, str):
        kind = scheduler.partition(":")[0]
        if kind == "processes":
            return PoolBackend(_workers(scheduler, workers, kind))
        if kind == "local":
            return DaskBackend.local(_workers(scheduler, workers, kind))
        if scheduler.strip():
            return DaskBackend.connect(scheduler)
    raise DetbalError(f"unknown scheduler {scheduler!r}: use serial, processes[:N], local[:N],"
                      " a Dask scheduler address or a distributed.Client")


__all__ = ["DaskBackend", "MapBackend", "PoolBackend", "SerialBackend", "make_backend"]
