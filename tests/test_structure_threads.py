"""Structures computed on several threads give exactly the one-thread result, in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvheval.engine.compute import compute_dvhs
from dvheval.engine.structure_dvh import structure_threads

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom" / "sample_plan"


def _run(monkeypatch, threads: str):
    monkeypatch.setenv("DVHEVAL_THREADS", threads)
    calls: list[tuple[int, int, str]] = []
    plan = compute_dvhs(SAMPLE, progress=lambda *a: calls.append(a))
    return plan, calls


def test_threads_change_nothing_but_the_time(monkeypatch):
    one, calls_one = _run(monkeypatch, "1")
    two, calls_two = _run(monkeypatch, "2")
    assert [s.name for s in one.structures] == [s.name for s in two.structures]
    for a, b in zip(one.structures, two.structures, strict=True):
        assert a.metrics == b.metrics and a.volume_cc == b.volume_cc
        assert (a.dvh is None) == (b.dvh is None)
        if a.dvh is not None:
            assert np.array_equal(a.dvh.edges_gy, b.dvh.edges_gy)
            assert np.array_equal(a.dvh.volumes_cc, b.dvh.volumes_cc)
    # progress: each structure announced once, in order, then the end
    assert calls_one == calls_two
    n = len(one.structures)
    assert [c[:2] for c in calls_two] == [(i, n) for i in range(n + 1)]


def test_thread_count_setting(monkeypatch):
    monkeypatch.setenv("DVHEVAL_THREADS", "3")
    assert structure_threads() == 3
    monkeypatch.setenv("DVHEVAL_THREADS", "zero")  # not a count: the default
    assert 1 <= structure_threads() <= 4
