"""A whole local mesh of real processes on a tiny model, shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from treadle_runtime.launcher import LocalMesh, UpConfig

TINY = "treadle/tiny-llama"


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """SeaweedFS, checkpoints, trainer, sampler and scheduler as processes, on tiny-llama."""
    config = UpConfig(
        base_model=TINY,
        port=0,
        data_dir=str(tmp_path_factory.mktemp("mesh")),
        metrics=False,
        startup_timeout=120,
    )
    with LocalMesh(config) as running:
        yield running
