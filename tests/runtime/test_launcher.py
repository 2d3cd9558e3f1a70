"""`treadle up`'s sharing of the machine's cores: each trainer and sampler gets an equal share of
torch threads unless told otherwise, so their OpenMP pools do not fight over the same cores."""

from __future__ import annotations

import os

import pytest

from treadle_runtime.launcher import LocalMesh, UpConfig


def test_the_cores_are_shared_equally_among_the_workers() -> None:
    cores = os.cpu_count() or 1
    assert UpConfig().threads_per_worker() == max(1, cores // 2)
    two_models = UpConfig(base_model="a,b", trainers=2, samplers=2)
    assert two_models.threads_per_worker() == max(1, cores // 8)
    assert UpConfig(torch_threads=3).threads_per_worker() == 3


def test_negative_threads_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^torch_threads: must be >= 0"):
        UpConfig(torch_threads=-1).validate()


def test_the_running_workers_got_their_share(mesh: LocalMesh) -> None:
    share = str(mesh.config.threads_per_worker())
    for name in ("trainer-0", "sampler-0"):
        command = mesh.service(name).command
        assert command[command.index("--torch-threads") + 1] == share
