"""Checkpoints as a user handles them through the public endpoint: the SDK's RestClient and the
`treadle checkpoints` CLI against a real mesh (listing, weights info, TTL, streamed download,
PEFT and merged export, deletion by filter) and another tenant seeing none of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

import treadle
from fixtures.data import token_batch
from fixtures.grpc_server import free_port, wait_serving
from treadle import types
from treadle.checkpoints_cli import main as checkpoints_cli
from treadle.v1 import checkpoints_pb2
from treadle_models import load_model
from treadle_models.export import serving_problems
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY


@dataclass
class Trained:
    """A training model after three steps, with a sampler and a state checkpoint."""

    service: treadle.ServiceClient
    training: treadle.TrainingClient
    sampler_path: str
    state_path: str
    batch: list[types.Datum]


@pytest.fixture(scope="module")
def trained(mesh: LocalMesh) -> Iterator[Trained]:
    service = treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key)
    training = service.create_lora_training_client(base_model=TINY, rank=4, seed=3)
    batch = token_batch(seed=5)
    for _ in range(3):
        training.forward_backward(batch)
        training.optim_step(types.AdamParams(learning_rate=1e-2))
    sampler = training.save_weights_for_sampler("exported").result(timeout=60).path
    state = training.save_state("resume", ttl_seconds=3600).result(timeout=60).path
    yield Trained(service, training, sampler, state, batch)
    service.close()


@pytest.fixture
def cli(mesh: LocalMesh, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI's environment: the mesh's endpoint and key."""
    monkeypatch.setenv("TREADLE_BASE_URL", mesh.endpoint)
    monkeypatch.setenv("TREADLE_API_KEY", mesh.api_key)
    yield


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "treadle.cli", "checkpoints", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_list_info_and_ttl(trained: Trained, cli: None, capsys: pytest.CaptureFixture[str]) -> None:
    run = trained.training.model_id
    assert checkpoints_cli(["ls", "--run", run]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == {trained.sampler_path, trained.state_path}
    assert rows[trained.sampler_path].rstrip().endswith("never")
    assert not rows[trained.state_path].rstrip().endswith("never")  # saved with a 1 h TTL

    rest = trained.service.create_rest_client()
    info = rest.get_weights_info(trained.state_path).result()
    assert (info.base_model, info.lora_rank, info.step) == (TINY, 4, 3)
    assert info.is_lora and info.train_unembed and info.checkpoint_type == "training"
    assert (
        0 < info.size_bytes
        and info.size_bytes > rest.get_weights_info(trained.sampler_path).result().size_bytes
    )  # the state holds the optimizer moments too
    assert checkpoints_cli(["info", trained.sampler_path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lora_rank"] == 4

    with pytest.raises(treadle.RequestFailedError) as missing:
        rest.get_weights_info(f"treadle://{run}/weights/absent").result()
    assert missing.value.code == "NOT_FOUND"
    with pytest.raises(treadle.ValidationError, match="path"):
        rest.get_weights_info("s3://bucket/key")

    def expires_at(path: str) -> float | None:
        return next(c.expires_at for c in rest.list_checkpoints(run).result() if c.path == path)

    assert checkpoints_cli(["ttl", trained.sampler_path, "2h"]) == 0
    assert abs((expires_at(trained.sampler_path) or 0) - (time.time() + 7200)) < 60
    assert checkpoints_cli(["ttl", trained.sampler_path, "keep"]) == 0
    assert capsys.readouterr().out.strip().endswith("expires never")
    assert expires_at(trained.sampler_path) is None

    sampling = trained.training.save_weights_and_get_sampling_client()  # ephemeral
    ephemeral = next(
        c for c in rest.list_checkpoints(run).result() if c.path == sampling.model_path
    )
    assert ephemeral.checkpoint_type == "sampler" and "/sampler_weights/" in ephemeral.path
    assert abs((ephemeral.expires_at or 0) - (time.time() + 24 * 3600)) < 60  # short-lived

    assert checkpoints_cli(["ttl", trained.sampler_path, "-5"]) == 1
    with pytest.raises(treadle.ValidationError, match="ttl_seconds"):
        rest.set_checkpoint_ttl(trained.sampler_path, -5)
    raw = checkpoints_pb2.SetTtlRequest(path=trained.sampler_path, ttl_seconds=-5)
    with pytest.raises(treadle.RequestFailedError) as refused:  # past the client's own check
        trained.service.connection.unary("SetCheckpointTtl", raw).result()
    assert refused.value.code == "INVALID_ARGUMENT" and "ttl_seconds" in refused.value.message


def test_download_streams_a_tar_with_a_progress_bar_and_no_torch(
    mesh: LocalMesh, trained: Trained, tmp_path: Path
) -> None:
    env = {**os.environ, "TREADLE_BASE_URL": mesh.endpoint, "TREADLE_API_KEY": mesh.api_key}
    archive = tmp_path / "state.tar"
    done = _run_cli("download", trained.state_path, "-o", str(archive), env=env)
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr  # tqdm's bar, on stderr
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        metadata = json.load(tar.extractfile("metadata.json"))  # type: ignore[arg-type]
    assert names[0] == "metadata.json"
    assert {"adapter_model.safetensors", "optimizer.safetensors"} <= set(names)
    assert metadata["checkpoint"]["path"] == trained.state_path

    probe = (
        "import sys; from treadle.checkpoints_cli import main; rc = main(['ls']); "
        "sys.exit(rc or 3 * ('torch' in sys.modules))"
    )
    listed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert trained.state_path in listed.stdout


def _peft_model(folder: Path) -> torch.nn.Module:
    model = PeftModel.from_pretrained(load_model(TINY), folder)
    model.eval()
    return model


def _target_logprobs(logits: torch.Tensor, datum: types.Datum) -> np.ndarray:
    targets = torch.as_tensor(np.asarray(datum.loss_fn_inputs["target_tokens"].data))
    logprobs = torch.log_softmax(logits[0].float(), -1)
    return logprobs.gather(1, targets[:, None])[:, 0].numpy()


def test_peft_and_merged_exports_reproduce_the_trainer(
    trained: Trained, cli: None, tmp_path: Path
) -> None:
    peft_dir, merged_dir = tmp_path / "peft", tmp_path / "merged"
    args = ["export", trained.sampler_path, "--peft", str(peft_dir), "--merged", str(merged_dir)]
    assert checkpoints_cli([*args, "--no-progress"]) == 0
    files = {p.name: p.read_bytes() for p in peft_dir.iterdir()}
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors"}
    assert serving_problems(files) == []

    adapter_model = _peft_model(peft_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    merged.eval()
    trainer = trained.training.forward(trained.batch).result(timeout=60)
    for datum, output in zip(trained.batch, trainer.loss_fn_outputs, strict=True):
        ids = torch.tensor([datum.model_input.to_ints()])
        with torch.no_grad():
            adapter_logits = adapter_model(input_ids=ids).logits
            merged_logits = merged(input_ids=ids).logits
        np.testing.assert_allclose(
            _target_logprobs(adapter_logits, datum),
            np.asarray(output["logprobs"].data),
            rtol=0,
            atol=1e-4,
        )
        assert float((merged_logits - adapter_logits).abs().max()) <= 1e-4
    base = load_model(TINY)
    assert torch.equal(merged.get_input_embeddings().weight, base.get_input_embeddings().weight)
    assert not torch.equal(merged.lm_head.weight, base.lm_head.weight)  # untied, then merged
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template and len(tokenizer) == 49152


def test_rm_by_path_by_run_and_by_filter(
    mesh: LocalMesh, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
        training = service.create_lora_training_client(base_model=TINY, rank=4)
        run = training.model_id
        saved = [training.save_state(f"s{i}").result(timeout=60).path for i in range(2)]
        saved += [
            training.save_weights_for_sampler(f"w{i}").result(timeout=60).path for i in range(2)
        ]
        rest = service.create_rest_client()

        assert checkpoints_cli(["rm", "--run", run, "--older-than", "1h"]) == 0
        assert "nothing matched" in capsys.readouterr().out
        assert checkpoints_cli(["rm", "--run", run, "--kind", "sampler", "--dry-run"]) == 0
        assert sorted(capsys.readouterr().out.split()[2::3]) == sorted(saved[2:])
        assert len(rest.list_checkpoints(run).result()) == 4

        assert checkpoints_cli(["rm", "--run", run, "--kind", "sampler"]) == 0
        assert {c.path for c in rest.list_checkpoints(run).result()} == set(saved[:2])
        assert checkpoints_cli(["rm", saved[0]]) == 0
        assert checkpoints_cli(["rm", saved[0]]) == 1  # already gone: NOT_FOUND
        assert "NOT_FOUND" in capsys.readouterr().err
        time.sleep(0.05)
        deleted = rest.delete_checkpoints(run_id=run, older_than_seconds=0).result()
        assert deleted == [saved[1]] and rest.list_checkpoints(run).result() == []
        with pytest.raises(treadle.ValidationError):
            rest.delete_checkpoints()  # no filter: refused, nothing deleted


@pytest.fixture(scope="module")
def second_scheduler(mesh: LocalMesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another scheduler on the mesh's sampler and checkpoints, knowing two tenants' keys."""
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    keys.write_text(json.dumps({mesh.api_key: mesh.config.tenant, "tml-intruder": "intruder"}))
    port = free_port()
    address = f"127.0.0.1:{port}"
    by_name = {s.name: s.address for s in mesh.services}
    flags = {  # its one trainer address is a port nothing listens on: no model is made here
        "host": "127.0.0.1", "port": str(port), "trainers": f"127.0.0.1:{free_port()}",
        "samplers": by_name["sampler-0"], "checkpoints": by_name["checkpoints"],
        "api-keys-file": str(keys),
    }  # fmt: skip
    command = [sys.executable, "-m", "treadle_scheduler"]
    command += [part for key, value in flags.items() for part in (f"--{key}", value)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(address, timeout=60)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_another_tenant_gets_not_found_for_every_call(
    mesh: LocalMesh, trained: Trained, second_scheduler: str, tmp_path: Path
) -> None:
    with treadle.ServiceClient(base_url=second_scheduler, api_key=mesh.api_key) as owner:
        mine = {c.path for c in owner.create_rest_client().list_checkpoints().result()}
    assert {trained.sampler_path, trained.state_path} <= mine  # same store, same tenant

    with treadle.ServiceClient(base_url=second_scheduler, api_key="tml-intruder") as intruder:
        rest = intruder.create_rest_client()
        assert rest.list_checkpoints().result() == []
        assert rest.delete_run(trained.training.model_id).result() == []
        calls = {
            "weights_info": lambda p: rest.get_weights_info(p).result(),
            "set_ttl": lambda p: rest.set_checkpoint_ttl(p, 1).result(),
            "delete": lambda p: rest.delete_checkpoint(p).result(),
            "download": lambda p: rest.download_checkpoint(p, tmp_path / "x.tar").result(),
            "archive": lambda p: rest.download_checkpoint_archive(p).result(),
            "from_state": lambda p: intruder.create_training_client_from_state(p),
        }
        for name, call in calls.items():
            with pytest.raises(treadle.RequestFailedError) as failure:
                call(trained.state_path)
            assert failure.value.code == "NOT_FOUND", (name, failure.value)
            assert mesh.config.tenant not in failure.value.message
        sampling = intruder.create_sampling_client(model_path=trained.sampler_path)
        prompt = types.ModelInput.from_ints([1, 2, 3])
        with pytest.raises(treadle.RequestFailedError) as failure:
            sampling.sample(prompt, num_samples=1).result(timeout=60)
        assert failure.value.code == "NOT_FOUND", failure.value
    assert not (tmp_path / "x.tar").exists()
    rest = trained.service.create_rest_client()
    assert {c.path for c in rest.list_checkpoints(trained.training.model_id).result()} >= {
        trained.sampler_path, trained.state_path
    }  # fmt: skip
