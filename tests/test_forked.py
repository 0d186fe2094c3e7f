"""Sharing a plan's structures with forked copies of the process: same results, nothing lost."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from dvheval.engine.forked import forked_map

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"


@pytest.fixture
def copies(monkeypatch):
    """The pids of the copies forked_map starts (to check that none is left behind)."""
    from dvheval.engine import forked

    pids: list[int] = []
    start = forked._start

    def recorded(*args):
        pid, fd = start(*args)
        pids.append(pid)
        return pid, fd

    monkeypatch.setattr(forked, "_start", recorded)
    return pids


def _all_reaped(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        return False
    return True


def _slow_square(x: int) -> tuple[int, int]:
    time.sleep(0.005)
    return x * x, os.getpid()


def test_results_are_in_order_and_shared_among_processes(copies):
    items = list(range(60))
    costs = [float((7 * i) % 11) for i in items]
    got = forked_map(_slow_square, items, costs, workers=3)
    assert [r for r, _ in got] == [i * i for i in items]
    assert os.getpid() in {pid for _, pid in got}
    assert len({pid for _, pid in got}) > 1  # the copies took part
    assert len(copies) == 2
    assert _all_reaped(copies)


def test_progress_hears_of_every_item_once():
    seen: list[int] = []
    forked_map(_slow_square, list(range(20)), [1.0] * 20, workers=2, done=seen.append)
    assert sorted(seen) == list(range(20))


def test_a_copy_that_is_killed_loses_nothing(copies):
    parent = os.getpid()

    def square_but_copies_die(x: int) -> tuple[int, int]:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return _slow_square(x)

    got = forked_map(square_but_copies_die, list(range(30)), [1.0] * 30, workers=3)
    assert [r for r, _ in got] == [i * i for i in range(30)]
    assert {pid for _, pid in got} == {parent}
    assert len(copies) == 2
    assert _all_reaped(copies)


def test_unpicklable_results_are_computed_here():
    parent = os.getpid()

    def result(x: int):
        time.sleep(0.005)
        return (x, (lambda: x) if os.getpid() != parent else None)

    got = forked_map(result, list(range(20)), [1.0] * 20, workers=2)
    assert [x for x, _ in got] == list(range(20))
    assert all(f is None for _, f in got)  # every one computed in this process


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_the_error_of_the_first_failing_item_is_raised(workers, copies):
    def fails_at_7_and_13(x: int) -> int:
        time.sleep(0.002)
        if x in (7, 13):
            raise ValueError(f"item {x}")
        return x

    with pytest.raises(ValueError, match="item 7"):
        forked_map(fails_at_7_and_13, list(range(25)), [float(x) for x in range(25)],
                   workers=workers)
    assert len(copies) == workers - 1
    assert _all_reaped(copies)


def test_an_interrupt_stops_the_copies(copies):
    parent = os.getpid()

    def slow(x: int) -> int:
        if os.getpid() == parent:
            raise KeyboardInterrupt
        time.sleep(30)
        return x

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        forked_map(slow, list(range(10)), [1.0] * 10, workers=3)
    assert time.monotonic() - start < 10
    assert len(copies) == 2
    assert _all_reaped(copies)


def test_no_fork_while_another_thread_runs():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        got = forked_map(_slow_square, list(range(10)), [1.0] * 10, workers=2)
    finally:
        stop.set()
        t.join()
    assert {pid for _, pid in got} == {os.getpid()}


def test_the_sample_plan_gives_the_same_dvhs_shared_or_not():
    from dvheval.engine.compute import compute_dvhs

    alone = compute_dvhs(SAMPLE, workers=1)
    shared = compute_dvhs(SAMPLE, workers=2)
    assert [s.name for s in shared.structures] == [s.name for s in alone.structures]
    for a, b in zip(alone.structures, shared.structures, strict=True):
        assert a.metrics == b.metrics
        assert a.warnings == b.warnings and a.defects == b.defects
        if a.dvh is not None:
            assert (a.dvh.edges_gy == b.dvh.edges_gy).all()
            assert (a.dvh.volumes_cc == b.dvh.volumes_cc).all()


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damaged", [("RTSTRUCT.dcm",), ("RTSTRUCT.dcm", "RTDOSE.dcm")])
def test_damaged_files_are_refused_alike_shared_or_not(tmp_path, damaged):
    # the error does not depend on the sharing (the dose's first when both are damaged)
    import shutil

    from dvheval.engine.compute import compute_dvhs
    from dvheval.errors import InputError

    plan = tmp_path / "plan"
    shutil.copytree(SAMPLE, plan)
    for name in damaged:
        _cut(plan / name, 0.6)
    errors = []
    for workers in (1, 2):
        with pytest.raises(InputError) as info:
            compute_dvhs(plan, workers=workers)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert damaged[-1] in errors[0]


def test_with_stack_room_returns_and_raises_what_the_command_does():
    from dvheval.engine.forked import STACK_ROOM_SLOTS, _roomy_call, with_stack_room

    assert with_stack_room(lambda: [1, 2, 3]) == [1, 2, 3]
    with pytest.raises(KeyError, match="boom"):
        with_stack_room(lambda: {}["boom"])

    # nested, and deep recursion inside: every frame still works
    def depth(n: int) -> int:
        return 0 if n == 0 else 1 + depth(n - 1)
    assert with_stack_room(lambda: with_stack_room(lambda: depth(500))) == 500
    if (3, 11) <= sys.version_info[:2] <= (3, 13):
        # the frame that reserves the room (a value stack too large for a 16 KiB chunk)
        assert _roomy_call.__code__.co_stacksize == STACK_ROOM_SLOTS
        assert STACK_ROOM_SLOTS * 8 > 16 * 1024


def test_forked_copies_work_inside_the_room():
    from dvheval.engine.forked import with_stack_room

    got = with_stack_room(lambda: forked_map(lambda x: x * x, list(range(20)),
                                             [1.0] * 20, 2))
    assert got == [x * x for x in range(20)]
