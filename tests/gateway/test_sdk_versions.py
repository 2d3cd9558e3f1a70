"""Every pinned official tinker SDK, in its own virtualenv, replays tinker-cookbook's sl_loop and
rl_loop call sequences (replay.py) against the session mesh's gateway: the loss falls, the
logprobs agree with Treadle's own SDK on the same sampler checkpoint, the state checkpoint
resumes with its optimizer, and get_tokenizer() loads the served tokenizer offline."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import treadle
from fixtures.client_venvs import TinkerSdk
from fixtures.mesh import TINY
from treadle_models.sources import load_tokenizer
from treadle_runtime.launcher import LocalMesh

REPLAY = Path(__file__).parent / "replay.py"
TOKENS = list(range(100, 132))  # replay.py's sequence


@pytest.fixture(scope="session")
def replayed(
    tinker_sdk: TinkerSdk, mesh: LocalMesh, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """What replay.py saw, run by one SDK version offline, with an empty Hugging Face home."""
    hf_home = tmp_path_factory.mktemp(f"hf-{tinker_sdk.version}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(
        [str(tinker_sdk.python), str(REPLAY), mesh.gateway_url, mesh.api_key, TINY],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert report["version"] == tinker_sdk.version
    return report


def test_sl_loop_loss_falls_with_name_reduction_metrics(replayed: dict[str, Any]) -> None:
    losses = replayed["sl_losses"]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    assert "loss:sum" in replayed["metric_keys"]
    assert all(key.count(":") == 1 for key in replayed["metric_keys"])
    # one logprob per target token, for each of the two datums
    assert replayed["logprob_lengths"] == [[len(TOKENS) - 1] * 2] * len(losses)


def test_rl_loop_trains_on_its_own_samples(replayed: dict[str, Any]) -> None:
    assert [step["loss_fn"] for step in replayed["rl"]] == ["importance_sampling", "ppo"]
    for step in replayed["rl"]:
        assert step["datums"] == 8  # 2 prompts x group of 4
        assert "loss:sum" in step["metrics"]
        assert all(math.isfinite(value) for value in step["metrics"].values())


def test_logprobs_agree_with_treadles_sdk_on_the_same_checkpoint(
    replayed: dict[str, Any], mesh: LocalMesh
) -> None:
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
        sampler = service.create_sampling_client(model_path=replayed["sampler_path"])
        ours = sampler.compute_logprobs(treadle.types.ModelInput.from_ints(TOKENS)).result()
    theirs = replayed["final_logprobs"]
    assert theirs[0] is None and ours[0] is None
    assert len(theirs) == len(ours) == len(TOKENS)
    assert max(abs(a - b) for a, b in zip(theirs[1:], ours[1:], strict=True)) < 1e-4


def test_state_resumes_with_its_optimizer_and_trains_on(replayed: dict[str, Any]) -> None:
    assert replayed["resumed_model_id"] != replayed["model_id"]
    # the resumed weights are the saved ones: the same forward loss
    assert replayed["resumed_loss"] == pytest.approx(replayed["forward_loss"], rel=1e-4)
    assert replayed["resumed_step"] is not None


def test_get_tokenizer_loads_the_served_tokenizer_offline(replayed: dict[str, Any]) -> None:
    expected = load_tokenizer(TINY).encode("Hello, world", add_special_tokens=False)
    assert replayed["tokenizer_ids"] == expected
