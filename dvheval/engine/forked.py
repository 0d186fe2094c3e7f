"""Independent computations shared with forked copies of this process.

A plan's structures are independent of each other: :func:`forked_map` lets
copies of the process made by ``fork`` (which share the dose grid and the
contours with it, without copying or pickling them) compute some of them
while this process computes the rest. The items wait in a queue (a pipe
holding their numbers, costliest first) from which every process takes
the next one when it is free, so the work evens out whatever the estimate.
Fork is used only where it is safe and cheap: on Linux, with more than one
CPU available to the process and no other Python thread running (a thread
holding a lock at the fork would leave it locked in the copy).

Nothing is lost when a copy fails: an item a copy took but did not deliver
(it raised, was killed, or its results could not be read) is computed again
here, so an error is raised here as without copies (that of the first
failing item), and the results never depend on how the work was shared.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import struct
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Most processes (this one included) a computation is shared among.
MAX_WORKERS = 4
#: Most items shared through the queue (4 bytes each: a pipe holds 64 KiB).
MAX_QUEUED = 16_000
_ITEM = struct.Struct("<I")


#: Value-stack slots of the frame :func:`with_stack_room` calls in (8 bytes each).
STACK_ROOM_SLOTS = 1 << 17


def _call(command: Callable[[], T]) -> T:
    return command()


#: :func:`_call` with a frame too large for the interpreter's current data-stack
#: chunk (its value stack is reserved, not touched), where the stack is chunked
#: and a chunk freed at once (3.11 to 3.13; 3.10 has no such stack).
_roomy_call: Callable[[Callable[[], Any]], Any] = (
    types.FunctionType(_call.__code__.replace(co_stacksize=STACK_ROOM_SLOTS), _call.__globals__,
                       "_roomy_call")
    if (3, 11) <= sys.version_info[:2] <= (3, 13) else _call)


def with_stack_room(command: Callable[[], T]) -> T:
    """``command()``, called where the interpreter's frame stack has room to spare.

    CPython 3.11 to 3.13 keep the frames of Python calls on a stack of
    chunks (16 KiB at first). A call that does not fit in the current chunk
    allocates the next one (``mmap``), and the chunk is freed (``munmap``)
    as soon as that call returns, so a loop whose calls sit just across a
    chunk boundary maps, faults in and unmaps memory on every call
    (CPython issue gh-142183, mended in later versions by keeping one spare
    chunk). A whole command of dvheval has calls at every depth: on the
    shipped sample plan 11,000 of its 27,000 page faults came from this.

    ``command`` is called from a frame whose reserved value stack (about
    1 MiB of address space, never written) does not fit in the current
    chunk: that frame starts a chunk of 2 MiB, which stays for as long as
    ``command`` runs, and every call ``command`` makes fits in it.

    Examples
    --------
    >>> with_stack_room(lambda: 6 * 7)
    42
    """
    result: T = _roomy_call(command)
    return result


def available_workers() -> int:
    """Processes worth sharing a plan's structures among here: 1 where fork is not used.

    The CPUs this process may run on (at most :data:`MAX_WORKERS`) on
    Linux, else 1.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def forked_map(func: Callable[[T], R], items: Sequence[T], costs: Sequence[float],
               workers: int, done: Callable[[int], None] | None = None) -> list[R]:
    """``[func(x) for x in items]``, shared among this process and forked copies.

    Parameters
    ----------
    func : callable
        Computes one item's result; the result must be picklable.
    items : sequence
    costs : sequence of float
        Estimated cost of each item: the costliest are started first.
    workers : int
        Processes to share among, this one included; 1 (or where fork is
        not safe) computes everything here, in order.
    done : callable, optional
        Called with an item's index when its result is known here (this
        process's items as they finish, the copies' items when collected).

    Returns
    -------
    list
        The results in the order of ``items``.

    Raises
    ------
    Exception
        What ``func`` raised for the first item (in the order of ``items``)
        it failed on.
    """
    workers = min(workers, len(items))
    if (workers < 2 or len(items) > MAX_QUEUED or threading.active_count() > 1
            or not hasattr(os, "fork")):
        return _serial(func, items, done)
    order = sorted(range(len(items)), key=lambda i: -costs[i])
    queue, feed = os.pipe()
    try:
        os.write(feed, b"".join(_ITEM.pack(i) for i in order))
    finally:
        os.close(feed)
    results: dict[int, R] = {}
    failed: dict[int, Exception] = {}
    children: list[tuple[int, int]] = []
    try:
        # the collector would otherwise write to every object's header in the
        # copies, copying most of the memory they share with this process
        gc.freeze()
        try:
            children = [_start(func, items, queue) for _ in range(workers - 1)]
        finally:
            gc.unfreeze()
        while (i := _take(queue)) is not None:
            _compute(func, items, i, results, failed, done)
        while children:
            pid, fd = children.pop(0)
            for i, r in _collect(pid, fd):
                if 0 <= i < len(items) and i not in results:
                    results[i] = r
                    if done is not None:
                        done(i)
        for i in range(len(items)):  # taken by a copy that did not deliver it
            if i not in results and i not in failed:
                _compute(func, items, i, results, failed, done)
    finally:
        os.close(queue)
        for pid, fd in children:  # interrupted: the copies are of no use any more
            _stop(pid, fd)
    if failed:
        raise failed[min(failed)]
    return [results[i] for i in range(len(items))]


def _serial(func: Callable[[T], R], items: Sequence[T],
            done: Callable[[int], None] | None) -> list[R]:
    out = []
    for i in range(len(items)):
        out.append(func(items[i]))
        if done is not None:
            done(i)
    return out


def _compute(func: Callable[[T], R], items: Sequence[T], i: int, results: dict[int, R],
             failed: dict[int, Exception], done: Callable[[int], None] | None) -> None:
    try:
        results[i] = func(items[i])
    except Exception as exc:  # noqa: BLE001 - raised once the others are known
        failed[i] = exc
        return
    if done is not None:
        done(i)


def _take(queue: int) -> int | None:
    """The next item's number from the queue, or None when it is empty."""
    data = os.read(queue, _ITEM.size)
    return _ITEM.unpack(data)[0] if len(data) == _ITEM.size else None


def _start(func: Callable[[T], R], items: Sequence[T], queue: int) -> tuple[int, int]:
    """Fork a copy that computes items from the queue; its pid and its results' pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: compute, send, and leave without running any cleanup
        code = 1
        try:
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            out = []
            try:
                while (i := _take(queue)) is not None:
                    out.append((i, func(items[i])))
                code = 0
            finally:  # what was computed is sent even after a failure
                payload = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(payload)
        except BaseException:  # noqa: BLE001 - this process computes the missing items
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _collect(pid: int, fd: int) -> list[tuple[int, Any]]:
    """The ``(item, result)`` pairs a copy delivered (none if they cannot be read).

    Closes the pipe and reaps the copy.
    """
    chunks = []
    try:
        with os.fdopen(fd, "rb") as pipe:
            while chunk := pipe.read(1 << 20):
                chunks.append(chunk)
    except BaseException:
        _stop(pid, None)
        raise
    os.waitpid(pid, 0)
    try:
        got = pickle.loads(b"".join(chunks))
    except Exception:  # noqa: BLE001 - a damaged payload is recomputed here
        return []
    if not isinstance(got, list):
        return []
    return [p for p in got if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], int)]


def _stop(pid: int, fd: int | None) -> None:
    """End a copy whose results are no longer wanted, reap it, close its pipe."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    if fd is not None:
        os.close(fd)
