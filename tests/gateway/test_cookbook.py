"""tinker-cookbook 0.5.8's own sl_loop and rl_loop recipes, unchanged, train on a mesh through the
gateway: only their config is set (the served model's name, batch sizes, max_steps), offline,
with the no_robots- and gsm8k-shaped rows the cookbook ships (fixtures/cookbook_loop.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.cookbook_loop import COOKBOOK_MODEL, offline_hf_home, run_loop
from fixtures.mesh import extra_mesh
from treadle_runtime.launcher import LocalMesh

NAME = COOKBOOK_MODEL.split("=")[0]


@pytest.fixture(scope="module")
def cookbook_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """A mesh serving tiny-llama as meta-llama/Llama-3.2-1B, with its gateway."""
    with extra_mesh(
        tmp_path_factory, "cookbook", base_model=COOKBOOK_MODEL, gateway_port=0
    ) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def hf_home(cookbook_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return offline_hf_home(tmp_path_factory.mktemp("hf-home"), cookbook_venv)


def _final_checkpoint(log_path: Path) -> dict[str, str]:
    lines = (log_path / "checkpoints.jsonl").read_text().splitlines()
    saved = [json.loads(line) for line in lines if line.strip()]
    return next(c for c in saved if c["name"] == "final")


def test_sl_loop_runs_unchanged_and_its_loss_falls(
    cookbook_mesh: LocalMesh, cookbook_venv: Path, hf_home: Path, tmp_path: Path
) -> None:
    result = run_loop(
        "sl_loop",
        python=cookbook_venv,
        hf_home=hf_home,
        base_url=cookbook_mesh.gateway_url,
        api_key=cookbook_mesh.api_key,
        model_name=NAME,
        log_path=tmp_path / "sl",
        batch_size=4,
        max_steps=4,
        config={"learning_rate": 5e-3},
    ).check()
    losses = [float(m["train_mean_nll"]) for m in result.metrics]  # type: ignore[arg-type]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    assert min(losses[1:]) < losses[0]
    final = _final_checkpoint(result.log_path)
    assert final["state_path"].startswith("tinker://")
    assert final["sampler_path"].startswith("tinker://")


def test_rl_loop_runs_unchanged_samples_and_saves(
    cookbook_mesh: LocalMesh, cookbook_venv: Path, hf_home: Path, tmp_path: Path
) -> None:
    result = run_loop(
        "rl_loop",
        python=cookbook_venv,
        hf_home=hf_home,
        base_url=cookbook_mesh.gateway_url,
        api_key=cookbook_mesh.api_key,
        model_name=NAME,
        log_path=tmp_path / "rl",
        batch_size=2,
        group_size=4,
        max_steps=2,
        config={"max_tokens": 16},
    ).check()
    assert [m["step"] for m in result.metrics] == [0, 1]
    for metrics in result.metrics:
        # rewards of the tiny random model's answers: graded, all in [0, 1]
        assert 0.0 <= float(metrics["reward/total"]) <= 1.0  # type: ignore[arg-type]
        assert float(metrics["time/total"]) > 0  # type: ignore[arg-type]
    final = _final_checkpoint(result.log_path)
    assert final["sampler_path"].startswith("tinker://")
