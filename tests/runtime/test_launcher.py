"""`treadle up`'s sharing of the machine's cores: a model's trainers share its part of the cores,
its samplers half of that, unless one thread count is given for both."""

from __future__ import annotations

import os

import pytest

from treadle_runtime.launcher import LocalMesh, UpConfig


def test_the_cores_are_shared_among_the_workers() -> None:
    cores = len(os.sched_getaffinity(0))
    assert UpConfig().worker_threads() == (cores, max(1, cores // 2))
    two_models = UpConfig(base_model="a,b", trainers=2, samplers=2)
    assert two_models.worker_threads() == (max(1, cores // 4), max(1, cores // 8))
    assert UpConfig(torch_threads=3).worker_threads() == (3, 3)


def test_negative_threads_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^torch_threads: must be >= 0"):
        UpConfig(torch_threads=-1).validate()


def test_the_running_workers_got_their_share(mesh: LocalMesh) -> None:
    shares = mesh.config.worker_threads()
    for name, share in zip(("trainer-0", "sampler-0"), shares, strict=True):
        command = mesh.service(name).command
        assert command[command.index("--torch-threads") + 1] == str(share)
