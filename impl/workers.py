"""Worker processes that cannot deadlock, for CPU-bound work such as puzzle generation.

    with Workers(2) as pool:
        for result in pool.run(fn, args):   # fn(arg) for each arg, results in order
            ...
    for result in in_order(fn, args, 2, 1.0):   # the same, in this process for the first second
        ...

fn must be importable by name from impl/ (a module-level function of a module, not of __main__).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator

import errors

# Not multiprocessing.Pool: its terminate() SIGTERMs workers that may hold the shared result
# queue's lock (killed mid-put), then joins the task-feeder thread, which needs that lock to put
# its end marker, so it waits forever (issue 21: 1 fresh start in 20 hung). And fork() copies a
# process whose other threads (torch's, tqdm's monitor) may hold locks the child then waits on.
#
# Here each worker is a fresh interpreter (`python -c`, not a fork) that imports only this module and the
# modules of the functions it is asked to run,
# talking over its own task pipe and result pipe: no lock is shared between processes and no
# helper thread runs in this one. A worker gets a call only when idle, so the parent never blocks
# on a write; it waits only for results, and a worker that dies shows there as end-of-file and is
# reported with its exit status. Stopping is SIGKILL, safe at any moment: nothing shared can be
# left locked and workers write no files.
#

SUPPORTED = os.name == "posix" and bool(sys.executable)  # elsewhere: run everything in-process


class Workers:
    """`n` worker processes that run fn(arg) calls for run(); close() (or `with`) kills them."""

    def __init__(self, n: int) -> None:
        self._procs: list[subprocess.Popen] = []
        self._send: list[Connection] = []  # this process's end of each worker's task pipe
        self._recv: list[Connection] = []  # this process's end of each worker's result pipe
        self._busy: dict[int, int] = {}  # worker index -> number of the call it runs
        self._calls = 0  # calls handed out so far (their numbers are 0, 1, ...)
        here = os.path.dirname(os.path.abspath(__file__))
        code = f"import sys; sys.path.insert(0, {here!r}); import workers; workers.worker_main()"
        try:
            for _ in range(n):
                task_r, task_w = os.pipe()
                result_r, result_w = os.pipe()
                self._send.append(Connection(task_w, readable=False))
                self._recv.append(Connection(result_r, writable=False))
                try:
                    # A new session: Ctrl-C in the terminal reaches this process only, which stops them.
                    self._procs.append(subprocess.Popen([sys.executable, "-c", code], stdin=task_r,
                                                        stdout=result_w, start_new_session=True))
                finally:
                    os.close(task_r)
                    os.close(result_w)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, fn: Callable[[Any], Any], args: Iterable[Any]) -> Iterator[Any]:
        """fn(arg) for each arg, in order (fn must be importable by name, like _generate_chunk).

        Calls are handed out one per idle worker and at most 2 per worker ahead of the result
        the caller waits for (bounded submission). An exception raised by a call is raised here
        in its turn; a worker that dies raises errors.DataError. Stopping early is fine: results
        of calls still running are dropped when they arrive, by this run or a later one.
        """
        args = iter(args)
        first = next_out = self._calls
        arrived: dict[int, tuple[bool, Any]] = {}  # call number -> (ok, result or exception)
        more = True
        while True:
            while more and len(self._busy) < len(self._procs) and self._calls < next_out + 2 * len(self._procs):
                arg = next(args, StopIteration)
                if arg is StopIteration:
                    more = False
                    break
                w = next(i for i in range(len(self._procs)) if i not in self._busy)
                try:
                    self._send[w].send((self._calls, fn, arg))
                except OSError:  # BrokenPipeError: the worker is gone
                    raise self._died(w) from None
                self._busy[w] = self._calls
                self._calls += 1
            if next_out in arrived:
                ok, value = arrived.pop(next_out)
                next_out += 1
                if not ok:
                    raise value
                yield value
                continue
            if not more and next_out == self._calls:  # every call of this run answered and handed on
                return
            if not self._busy:  # cannot happen: call next_out is out or arrived; never wait on nothing
                raise RuntimeError("Workers.run: no call in flight and none arrived")
            for conn in wait([self._recv[w] for w in self._busy]):
                w = self._recv.index(conn)
                try:
                    number, ok, value = conn.recv()
                except (EOFError, OSError):  # its end of the pipe closed: the worker exited
                    raise self._died(w) from None
                del self._busy[w]
                if number >= first:
                    arrived[number] = (ok, value)

    def _died(self, w: int) -> errors.DataError:
        proc = self._procs[w]
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # closed its pipe without exiting: should not happen
            proc.kill()
            code = proc.wait()
        if code < 0:
            cause = f"was killed by {signal.Signals(-code).name}"
            if -code == signal.SIGKILL:
                cause += " (out of memory? the kernel's OOM killer sends SIGKILL)"
        else:
            cause = f"exited with status {code} (see its message above)"
        return errors.DataError(f"worker process {proc.pid} {cause}; "
                                f"run again, or with fewer workers (workers=1: no worker processes)")

    def close(self) -> None:
        """Kill the workers and reap them; never waits on one that is stuck."""
        for proc in self._procs:
            proc.kill()  # a no-op for one that has exited
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): leave it
                pass
        for conn in self._send + self._recv:
            conn.close()
        self._procs, self._send, self._recv, self._busy = [], [], [], {}


def in_order(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int, in_process_s: float) -> Iterator[Any]:
    """fn(task) for each task, in task order, so the output does not depend on the number of workers.

    Runs in this process until in_process_s seconds have passed (a small job never starts a
    process), then on `workers` worker processes (if more than 1). Close the generator
    (contextlib.closing) to stop at once, workers included. fn must be importable by name.
    """
    tasks = iter(tasks)
    start = time.perf_counter()
    for task in tasks:
        yield fn(task)
        if workers > 1 and SUPPORTED and time.perf_counter() - start >= in_process_s:
            break
    else:
        return
    with Workers(workers) as pool:
        yield from pool.run(fn, tasks)


def worker_main() -> None:
    """A worker process (see Workers): answer (number, fn, arg) calls from stdin on stdout."""
    tasks = Connection(os.dup(0), writable=False)
    results = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print goes to stderr, not into the result pipe
    while True:
        try:
            number, fn, arg = tasks.recv()
        except EOFError:  # the parent closed the pipe or exited
            return
        try:
            reply = (number, True, fn(arg))
        except errors.UserError as e:
            reply = (number, False, e)
        except Exception as e:  # a bug: send its traceback, which the parent could not show
            trace = "".join(traceback.format_exception(e))
            reply = (number, False, RuntimeError(f"in a puzzle generation worker:\n{trace}"))
        try:
            results.send(reply)
        except BrokenPipeError:  # the parent is gone
            return


