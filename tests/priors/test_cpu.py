"""The scoped allocator setting: held while any run is in flight, released after the last one."""

from __future__ import annotations

import sys
import threading

import pytest

from napari_brgm.priors import cpu


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(cpu, "retain_freed_memory", lambda: seen.append("retain") or True)
    monkeypatch.setattr(cpu, "release_freed_memory", lambda: seen.append("release") or True)
    return seen


def test_the_setting_is_held_from_the_first_entry_to_the_last_exit(calls):
    with cpu.memory_retained():
        with cpu.memory_retained():
            assert calls == ["retain"]
        assert calls == ["retain"]
    assert calls == ["retain", "release"]


def test_a_failing_run_releases_too(calls):
    with pytest.raises(RuntimeError), cpu.memory_retained():
        raise RuntimeError("the engine failed")
    assert calls == ["retain", "release"] and cpu._holders == 0


def test_overlapping_runs_in_threads_share_one_hold(calls):
    inside, leave = threading.Barrier(3), threading.Event()

    def run():
        with cpu.memory_retained():
            inside.wait()
            leave.wait()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert calls == ["retain"] and cpu._holders == 2
    leave.set()
    for t in threads:
        t.join()
    assert calls == ["retain", "release"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_accepts_both_settings():
    assert cpu.retain_freed_memory() is True
    assert cpu.release_freed_memory() is True
