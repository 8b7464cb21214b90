"""Stage 01's process pool: recordings shared among forked workers that write their results
straight into memory-mapped ``.npy`` files (used by :mod:`lib.features.cache` and
:mod:`lib.features.waveform`)."""
from __future__ import annotations

import multiprocessing as mp
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..core.progress import progress
from ..core.utils import end_with_parent, keep_freed_memory

WORKER: dict = {}


def _init_worker(extractor, audio_cfg: dict, outputs: tuple, pooled: bool = False) -> None:
    """Set up a process to run a worker function: one torch thread (the processes are the
    parallelism); in a pool worker also one BLAS thread for numpy/scipy (threadpoolctl),
    glibc's freed memory kept (:func:`lib.core.utils.keep_freed_memory`; the stage calls it too,
    but a ``spawn``-started worker would not inherit it), and an end with the stage
    (:func:`lib.core.utils.end_with_parent`) at SIGTERM's default action (the stage handles it as
    Ctrl-C, :func:`lib.cli.run`; a worker must simply end when the stage terminates it)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if pooled:
        from threadpoolctl import threadpool_limits

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        end_with_parent()  # a pool worker waits for chunks for ever: it must not outlive a kill -9 of the stage
        threadpool_limits(1)
        keep_freed_memory()
    WORKER.update(extractor=extractor, audio=audio_cfg, outputs=outputs)


def run_parallel(fn, chunks: list, init: tuple, workers: int, total: int, desc: str) -> list:
    """Run ``fn(chunk) -> recordings done`` (or ``(recordings done, found)``, ``found`` a list)
    over ``chunks`` in ``workers`` forked processes (this process alone when ``workers`` is 1),
    each set up by :func:`_init_worker` ``(*init)``, with a progress bar of ``total`` recordings;
    returns every chunk's ``found`` joined, in the order of ``chunks``. The extractor's
    ``prepare()`` (when it has one) runs once here, before forking, and so does the first chunk:
    whatever the extraction compiles on
    first use is then compiled once and inherited, never by several workers at once (librosa's
    numba functions are cached on disk, and two processes compiling one into a fresh cache can
    leave a file that crashes every later call: numba issue #10128). This process's torch thread
    count is restored afterwards.

    Raises ``RuntimeError`` when a worker ends without an exception (killed by a signal, by the
    kernel's out-of-memory killer, or a crash in compiled code) instead of waiting for its chunk
    for ever (``multiprocessing.Pool`` waits; ``ProcessPoolExecutor`` notices). On any other
    error or an interruption the workers still running are terminated before it propagates.
    """
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    _init_worker(*init)  # this process too: one torch thread, so forking after it is safe
    if hasattr(init[0], "prepare"):
        init[0].prepare()  # filterbanks built once here, inherited by the forked workers
    before, pool, found = set(mp.active_children()), None, []

    def done(result) -> None:
        n, more = result if isinstance(result, tuple) else (result, [])
        bar.update(n)
        found.extend(more)

    try:
        with progress(total=total, desc=desc, unit="rec") as bar:
            if workers > 1 and len(chunks) > 1:
                done(fn(chunks[0]))
                chunks = chunks[1:]
                pool = ProcessPoolExecutor(workers, mp.get_context("fork"), _init_worker, (*init, True))
            for result in pool.map(fn, chunks) if pool else map(fn, chunks):
                done(result)
    except BrokenProcessPool:
        raise RuntimeError(
            f"{desc}: a feature worker process ended abruptly (killed by a signal, by the kernel's "
            f"out-of-memory killer, or a crash in compiled code). Run again with fewer workers "
            f"(--workers) to use less memory, or --workers 1 to see the failure in this process") from None
    except BaseException:
        for p in set(mp.active_children()) - before:  # ProcessPoolExecutor has no terminate()
            p.terminate()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if threads is not None:  # leave this process's torch threads as they were
            sys.modules["torch"].set_num_threads(threads)
    return found
