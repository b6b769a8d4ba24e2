"""Evaluate model configurations on a Dask cluster (``dask.distributed``).

Used by ``axkern search`` (always) and ``axkern survey --scheduler``. A configuration is a
task ``(key, {layer: (index into the multiplier pool or None, tune)})`` as in
:mod:`axkern.survey`; its result is the held-out accuracy in percent.

The model, the data and the multiplier tables travel to each worker once, in a worker plugin
registered under a name derived from a token of their content: the scheduler hands the plugin
to every worker, including workers that join or are restarted later, so a task carries only
its key and its small per-layer assignment. Each worker thread evaluates on its own copy of
the model. A worker that dies while it runs a task costs that task a rerun elsewhere (the
scheduler reschedules it; exceptions raised by a task are retried ``retries`` times).

By default a :class:`distributed.LocalCluster` of single-threaded worker processes, one per
core, listening on 127.0.0.1 only, is started and closed with the evaluator; with a
``scheduler`` address, the evaluator connects to an existing cluster (whose workers must have
axkern installed) and leaves it running.
"""
from __future__ import annotations

import os
import threading
import time

__all__ = ["Evaluator", "SEARCH_INSTALL_HINT"]

SEARCH_INSTALL_HINT = 'pip install "axkern[search]"'

# worker side: {token: state} filled by the plugin; per-thread model copies
_WORKER_STATES = {}
_LOCAL = threading.local()


def _require_distributed():
    from .survey import _require

    return _require("distributed", "distributed evaluation (Dask)", SEARCH_INSTALL_HINT)


def _plugin_class():
    from distributed.diagnostics.plugin import WorkerPlugin

    class AxkernState(WorkerPlugin):
        """Holds one search's model, data and tables on every worker."""

        def __init__(self, token, state):
            self.token = token
            self.state = state

        # this class travels by value: reach the module's dict through an import, not
        # through a captured global (which would be a copy)
        def setup(self, worker):
            from axkern import cluster

            cluster._WORKER_STATES[self.token] = self.state

        def teardown(self, worker):
            from axkern import cluster

            cluster._WORKER_STATES.pop(self.token, None)

    return AxkernState


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def evaluate_task(token, task):
    """Worker side: accuracy (percent) of one configuration with the state named ``token``."""
    from .survey import _run_task

    state = _WORKER_STATES.get(token)
    if state is None:
        raise RuntimeError(f"this worker holds no axkern state {token!r} (plugin not set up)")
    own = getattr(_LOCAL, "state", None)
    if own is None or own[0] != token:
        # one model copy per thread: configure() mutates the model
        own = (token, dict(state, model=state["model"].copy()))
        _LOCAL.state = own
    return _run_task(task, own[1])


class Evaluator:
    """Runs configuration tasks on a Dask cluster.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``). None starts a local cluster.
    workers : int, optional
        Worker processes of the local cluster (default: one per available core).
    connect_timeout : float
        Seconds to wait for the scheduler before giving up.
    retries : int
        Reruns of a task that raised an exception.
    """

    def __init__(self, scheduler=None, *, workers=None, connect_timeout=5.0, retries=2):
        distributed = _require_distributed()
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        if not (isinstance(connect_timeout, (int, float)) and connect_timeout > 0):
            raise ValueError(f"connect_timeout must be a positive number of seconds, got "
                             f"{connect_timeout!r}")
        self.retries = int(retries)
        self.cluster = None
        self.client = None
        self._plugins = []
        if scheduler is None:
            import logging

            n = workers or _cpu_count()
            self.cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
            try:
                self.client = distributed.Client(self.cluster)
            except BaseException:
                self.cluster.close()
                raise
            self.address = self.cluster.scheduler_address
        else:
            if not isinstance(scheduler, str) or not scheduler.strip():
                raise ValueError(f"scheduler must be an address such as tcp://host:8786, got "
                                 f"{scheduler!r}")
            if workers is not None:   # checked before connecting: no client left open
                raise ValueError("workers sizes the local cluster: it cannot be combined with "
                                 "a scheduler address")
            self.address = scheduler.strip()
            t0 = time.monotonic()
            try:
                self.client = distributed.Client(self.address, timeout=connect_timeout,
                                                 set_as_default=False)
            except (OSError, TimeoutError) as e:
                raise RuntimeError(
                    f"cannot reach the Dask scheduler at {self.address} "
                    f"(gave up after {time.monotonic() - t0:.1f} s): {e}") from None
            except ValueError as e:
                raise ValueError(f"bad Dask scheduler address {self.address!r}: {e}") from None

    def broadcast(self, token, state):
        """Send ``state`` (model, x, y, multipliers, ...) to every worker, once."""
        name = f"axkern-state-{token}"
        try:
            self.client.register_plugin(_plugin_class()(token, state), name=name)
        except Exception as e:  # e.g. workers without axkern cannot unpickle the state
            raise RuntimeError(f"could not set up the workers of the Dask cluster at "
                               f"{self.address}: {type(e).__name__}: {e} (do they have the "
                               f"same axkern installed?)") from e
        self._plugins.append(name)
        return token

    def run(self, token, tasks, *, on_result=None, deadline=None):
        """Evaluate ``tasks``; ``{key: accuracy}`` and whether the deadline stopped it.

        ``on_result(key, accuracy)`` is called as results arrive (in completion order); the
        returned dict does not depend on that order. Past ``deadline`` (a ``time.monotonic``
        value), unfinished tasks are cancelled and the results so far are returned.
        """
        distributed = _require_distributed()
        results = {}
        if not tasks:
            return results, False
        futures = {}
        for task in tasks:
            f = self.client.submit(evaluate_task, token, task, retries=self.retries, pure=False)
            futures[f] = task[0]
        stopped = False
        pending = set(futures)
        ac = distributed.as_completed(list(futures), loop=self.client.loop)
        try:
            while pending:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    batch = ac.next_batch(block=True) if timeout is None else \
                        _next_batch_timeout(ac, timeout)
                except TimeoutError:
                    stopped = True
                    break
                for f in batch:
                    pending.discard(f)
                    if f.status == "error":
                        exc = f.exception()
                        key = futures[f]
                        raise RuntimeError(f"evaluating configuration {key!r} failed on the "
                                           f"cluster: {type(exc).__name__}: {exc}") from exc
                    if f.status == "cancelled":
                        raise RuntimeError(f"the cluster lost configuration {futures[f]!r}")
                    key, acc = f.result()
                    results[key] = acc
                    if on_result is not None:
                        on_result(key, acc)
        finally:
            if pending:
                self.client.cancel(list(pending))
        return results, stopped

    def close(self):
        """Unregister the plugins; close the client and the local cluster (if started)."""
        try:
            if self.client is not None:
                for name in self._plugins:
                    try:
                        self.client.unregister_worker_plugin(name)
                    except Exception:  # a cluster that went away keeps nothing to clean up
                        pass
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
            self.client = self.cluster = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _next_batch_timeout(ac, timeout):
    """Block up to ``timeout`` seconds for at least one finished future."""
    end = time.monotonic() + timeout
    while True:
        if ac.has_ready():
            return ac.next_batch(block=False)
        if time.monotonic() >= end:
            raise TimeoutError
        time.sleep(min(0.02, max(0.0, end - time.monotonic())))
