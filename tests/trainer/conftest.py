"""A real trainer server on tiny-llama, a client that drives RunCycles, and plan builders."""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import torch
from peft import get_peft_model

from fixtures.grpc_server import ServicersApp, running_server
from treadle import tensors
from treadle.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from treadle_models import load_model
from treadle_models.lora import LoraSpec, peft_lora_config
from treadle_trainer.app import SERVICE_NAME
from treadle_trainer.config import TrainerConfig
from treadle_trainer.cycle import CheckpointStore, CycleRunner
from treadle_trainer.engine import TrainerEngine
from treadle_trainer.service import TrainerServicer

TINY = "treadle/tiny-llama"
VOCAB = 49152
MAX_SEQ_LEN = 64


class CycleClient:
    """One RunCycles stream: send a plan, get its op results (by op_id) and its CycleDone."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = trainer_pb2_grpc.TrainerStub(self.channel)
        self._commands: queue.Queue[trainer_pb2.TrainerCommand | None] = queue.Queue()
        self._events = self.stub.RunCycles(iter(self._commands.get, None))
        self._cycle = 0
        self.events: list[trainer_pb2.TrainerEvent] = []  # every event of the last plan

    def run(
        self, ops: Sequence[trainer_pb2.PlannedOp]
    ) -> tuple[dict[str, trainer_pb2.OpResult], trainer_pb2.CycleDone]:
        self._cycle += 1
        self._commands.put(
            trainer_pb2.TrainerCommand(plan=trainer_pb2.CyclePlan(cycle=self._cycle, ops=ops))
        )
        self.events = []
        for event in self._events:
            self.events.append(event)
            if event.HasField("cycle_done"):
                results = {e.op_result.op_id: e.op_result for e in self.events[:-1]}
                return results, event.cycle_done
        raise AssertionError("RunCycles ended before the cycle was done")

    def run_ok(self, ops: Sequence[trainer_pb2.PlannedOp]) -> dict[str, trainer_pb2.OpResult]:
        """Run a plan whose ops must all succeed."""
        results, _ = self.run(ops)
        for op_id, result in results.items():
            assert not result.HasField("error"), f"{op_id}: {result.error}"
        return results

    def close(self) -> None:
        self._commands.put(None)
        self.channel.close()


@dataclass
class Trainer:
    """A running trainer server, its engine (to read adapters' gradients) and a client."""

    address: str
    engine: TrainerEngine
    client: CycleClient


@contextmanager
def serve_engine(engine: TrainerEngine, store: CheckpointStore | None = None) -> Iterator[str]:
    """A real trainer gRPC server over `engine`; yields its address."""

    def register(server: grpc.aio.Server) -> list[str]:
        runner = CycleRunner(engine, store)
        trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(runner), server)
        return [SERVICE_NAME]

    with running_server(ServicersApp(register), service="trainer", config=TrainerConfig()) as at:
        yield at


@pytest.fixture(scope="module")
def trainer() -> Iterator[Trainer]:
    """A trainer on tiny-llama (max_seq_len 64) with no checkpoint service."""
    engine = TrainerEngine(TINY, device="cpu", max_seq_len=MAX_SEQ_LEN)
    with serve_engine(engine) as address:
        client = CycleClient(address)
        try:
            yield Trainer(address, engine, client)
        finally:
            client.close()


# plan builders


def model_input(tokens: Sequence[int]) -> common_pb2.ModelInput:
    chunk = common_pb2.ModelInputChunk(encoded_text=common_pb2.EncodedTextChunk(tokens=tokens))
    return common_pb2.ModelInput(chunks=[chunk])


def datum(tokens: Sequence[int], **inputs: object) -> common_pb2.Datum:
    """A next-token datum over `tokens` (input tokens[:-1], targets tokens[1:]) plus inputs."""
    encoded = {"target_tokens": tensors.encode(np.asarray(tokens[1:], dtype=np.int64))}
    encoded.update({name: tensors.encode(np.asarray(v, np.float32)) for name, v in inputs.items()})
    return common_pb2.Datum(model_input=model_input(tokens[:-1]), loss_fn_inputs=encoded)


def create(model_id: str, rank: int = 4, seed: int = 0, **lora: float) -> trainer_pb2.PlannedOp:
    return trainer_pb2.PlannedOp(
        op_id=f"{model_id}:create",
        model_id=model_id,
        create_adapter=trainer_pb2.CreateAdapterOp(
            tenant="tenant-a",
            base_model=TINY,
            lora_config=common_pb2.LoraConfig(rank=rank, **lora),
            seed=seed,
        ),
    )


def forward_backward(
    model_id: str,
    data: Sequence[common_pb2.Datum],
    loss_fn: str = "cross_entropy",
    op_id: str = "",
    forward_only: bool = False,
    **config: float,
) -> trainer_pb2.PlannedOp:
    return trainer_pb2.PlannedOp(
        op_id=op_id or f"{model_id}:fb",
        model_id=model_id,
        forward_backward=common_pb2.ForwardBackwardRequest(
            data=data, loss_fn=loss_fn, loss_fn_config=config, forward_only=forward_only
        ),
    )


def optim_step(model_id: str, op_id: str = "", **adam: float) -> trainer_pb2.PlannedOp:
    return trainer_pb2.PlannedOp(
        op_id=op_id or f"{model_id}:optim",
        model_id=model_id,
        optim_step=common_pb2.OptimStepRequest(adam_params=common_pb2.AdamParams(**adam)),
    )


def release(model_id: str) -> trainer_pb2.PlannedOp:
    return trainer_pb2.PlannedOp(
        op_id=f"{model_id}:release",
        model_id=model_id,
        release_adapter=trainer_pb2.ReleaseAdapterOp(),
    )


def output(result: trainer_pb2.OpResult, name: str) -> list[np.ndarray]:
    """One named per-datum output of a forward_backward result."""
    return [tensors.decode(o.outputs[name]) for o in result.forward_backward.loss_fn_outputs]


# independent references


def reference_model(rank: int, seed: int, model: str = TINY, **lora: float) -> torch.nn.Module:
    """A plain PEFT model on a fresh base, initialised as the trainer initialises one, then
    carried to float64: the exact answer that the float32 trainer is held to (a float32
    reference would itself be off by ~1e-5 where a vocabulary-long sum cancels)."""
    base = load_model(model)
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, peft_lora_config(LoraSpec(rank=rank, **lora)))
    peft_model.eval()
    return peft_model.double()


def reference_logprobs(model: torch.nn.Module, tokens: Sequence[int]) -> torch.Tensor:
    """Logprobs [T-1] of tokens[1:] given their prefix, one unpadded sequence."""
    ids = torch.tensor([list(tokens)])
    logits = model(input_ids=ids[:, :-1]).logits[0]
    return torch.log_softmax(logits.double(), dim=-1).gather(1, ids[0, 1:, None])[:, 0]


def reference_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """LoRA gradients keyed as the trainer keys them (adapter name removed)."""
    return {
        key.replace(".default", ""): param.grad.clone()
        for key, param in model.named_parameters()
        if "lora_" in key and param.grad is not None
    }


def reference_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """LoRA weights keyed as the trainer keys them."""
    return {
        key.replace(".default", ""): param.detach().clone()
        for key, param in model.named_parameters()
        if "lora_" in key
    }


def engine_grads(engine: TrainerEngine, model_id: str) -> dict[str, torch.Tensor]:
    """The gradients accumulated in a model's adapter on the trainer."""
    return {
        key: param.grad.clone()
        for key, param in engine.adapters[model_id].params.items()
        if param.grad is not None
    }


def rel_err(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    """‖got − want‖ / ‖want‖ over all tensors together."""
    assert set(got) == set(want)
    diff = sum(float((got[k] - want[k]).double().pow(2).sum()) for k in want)
    norm = sum(float(want[k].double().pow(2).sum()) for k in want)
    return (diff / norm) ** 0.5
