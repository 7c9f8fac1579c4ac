"""`workers.allocator.keep_freed_memory`: glibc's thresholds raised once, and freed buffers reused."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

import evoloss.workers.allocator as allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocate, touch and free a 48 MiB buffer (above glibc's largest dynamic mmap threshold, 32 MiB) 40
# times; print the minor page faults of the last 20 rounds.
FAULTS = r"""
import json, resource, sys
import torch
if sys.argv[1] == "keep":
    from evoloss.workers.allocator import keep_freed_memory
    assert keep_freed_memory()
def rounds(n):
    for _ in range(n):
        x = torch.empty(12 << 20)  # 48 MiB of float32
        x.fill_(1.0)
        del x
rounds(20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(20)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default, kept = _faults("default"), _faults("keep")
    pages = 20 * (48 << 20) // 4096  # every page of every round faulted in again: 245,760
    assert default > pages // 2, default  # glibc's defaults unmap the buffer at every free
    assert kept < pages // 50, kept  # kept: the same heap pages every round


class FakeMallopt:
    """Stands in for libc's ``mallopt`` (a ctypes function: it takes ``argtypes`` and ``restype``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = 1

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


class FakeLibc:
    def __init__(self) -> None:
        self.mallopt = FakeMallopt()

    @property
    def calls(self) -> list[tuple[int, int]]:
        return self.mallopt.calls


@pytest.fixture
def fake_libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.delenv(allocator.ENV, raising=False)
    return libc


def test_both_thresholds_are_set_once_per_process(fake_libc: FakeLibc) -> None:
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    assert fake_libc.calls == [(allocator.M_MMAP_THRESHOLD, 256 << 20), (allocator.M_TRIM_THRESHOLD, 1 << 30)]


@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
def test_the_environment_turns_it_off(fake_libc: FakeLibc, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(allocator.ENV, value)
    assert not allocator.keep_freed_memory()
    assert fake_libc.calls == []
    monkeypatch.setenv(allocator.ENV, "1")  # not remembered: a later call with it on applies
    assert allocator.keep_freed_memory() and len(fake_libc.calls) == 2


def test_no_change_off_glibc_or_when_mallopt_refuses(fake_libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert not allocator.keep_freed_memory() and fake_libc.calls == []
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    fake_libc.mallopt.result = 0
    assert not allocator.keep_freed_memory()


def test_a_job_runner_is_a_worker_that_keeps_freed_memory(fake_libc: FakeLibc) -> None:
    from evoloss.workers.jobs import JobRunner

    assert JobRunner().keeps_freed_memory and len(fake_libc.calls) == 2
