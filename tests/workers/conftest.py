"""Fixtures shared by the workers tests."""
from __future__ import annotations

import math
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F

from evoloss.losses.registry import Param, register_family, unregister_family


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Small models on a shared 2-core machine: one intra-op thread avoids spin-wait contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def float64_one_thread() -> Iterator[None]:
    """float64 networks and one intra-op thread (record-equality tests; tiny kernels only slow down on
    shared cores)."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


@pytest.fixture()
def nan_family() -> Iterator[str]:
    """``_test_nan``: cross entropy, NaN for rows whose largest |logit| exceeds ``limit`` (a member that
    diverges once its logits grow), registered for the test only."""
    name = "_test_nan"

    def nan_when_confident(logits: torch.Tensor, targets: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
        ce = F.cross_entropy(logits, targets, reduction="none")
        return torch.where(logits.detach().abs().amax(dim=1) > limit, torch.full_like(ce, math.nan), ce)

    register_family(name, [Param("limit", default=1.0, low=0.0, high=100.0)])(nan_when_confident)
    yield name
    unregister_family(name)
