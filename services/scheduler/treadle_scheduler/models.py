"""Training models, the requests made of them, and strict seq_id ordering per model.

Each training client numbers its requests 1, 2, 3, ...; `ModelRecord.admit` releases requests
to the cycle queue strictly in that order, holds one whose predecessor has not arrived, and
treats a repeated (model_id, seq_id) as the same request: an identical payload is answered with
the original's result (executed once), a different payload is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from treadle.v1 import common_pb2, scheduler_pb2, trainer_pb2
from treadle_runtime.errors import OpError

if TYPE_CHECKING:
    from treadle_scheduler.trainers import TrainerLink

DONE_KEPT = 256  # finished requests remembered per model for idempotent retries


@dataclass(eq=False, kw_only=True)
class Request:
    """One training op on its way through a cycle; `op_bytes` is the op serialized when it is
    queued, so that planning a cycle only concatenates bytes (treadle_runtime.wire_bytes)."""

    model_id: str
    seq_id: int  # 0 for the ops the scheduler makes itself (create, release)
    op: trainer_pb2.PlannedOp
    outcome: asyncio.Future[trainer_pb2.OpResult]
    tenant: str
    digest: bytes = b""  # of the Submit, to tell a retry from a different request
    tokens: int = 0  # forward/backward tokens the op costs
    enqueued_at: float = field(default_factory=time.monotonic)
    cycle: int = 0
    op_bytes: bytes = field(default=b"", repr=False)  # set when queued for a trainer


def payload_digest(message: object) -> bytes:
    """A digest of a request's payload, to tell a retry from a different request."""
    data = message.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
    return hashlib.sha256(data).digest()


def submit_digest(submit: scheduler_pb2.Submit) -> bytes:
    """The digest of a Submit without its request id (a retry may carry a new one)."""
    request_id = submit.request_id
    submit.request_id = ""
    try:
        return payload_digest(submit)
    finally:
        submit.request_id = request_id


@dataclass(eq=False)
class ModelRecord:
    """A training model: its owner, its adapter's placement, and its request order."""

    model_id: str
    tenant: str
    session_id: str
    base_model: str
    lora_config: common_pb2.LoraConfig
    trainer: TrainerLink
    step: int = 0
    next_seq: int = 1
    lost: str = ""  # why the model's state is gone (trainer lost), empty while healthy
    held: dict[int, Request] = field(default_factory=dict)
    seen: OrderedDict[int, Request] = field(default_factory=OrderedDict)

    def is_known(self, seq_id: int) -> bool:
        """Whether `seq_id` has been submitted before (a retry)."""
        return seq_id in self.seen or seq_id in self.held

    def admit(self, request: Request) -> tuple[Request, list[Request]]:
        """Register `request`; returns (the request that answers it, requests now ready in order).

        A retry returns the original request and nothing new to run.
        """
        original = self.seen.get(request.seq_id) or self.held.get(request.seq_id)
        if original is not None:
            if original.digest != request.digest:
                raise OpError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"seq_id: {request.seq_id} was already used for a different request "
                    f"on model {self.model_id}",
                    "seq_id",
                )
            return original, []
        if request.seq_id < self.next_seq:
            raise OpError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"seq_id: {request.seq_id} ran long ago and its result is no longer kept",
                "seq_id",
            )
        self.held[request.seq_id] = request
        ready: list[Request] = []
        while self.next_seq in self.held:
            released = self.held.pop(self.next_seq)
            self._remember(released)
            ready.append(released)
            self.next_seq += 1
        return request, ready

    def _remember(self, request: Request) -> None:
        self.seen[request.seq_id] = request
        while len(self.seen) > DONE_KEPT:
            self.seen.popitem(last=False)

    def expire_held(self, older_than: float) -> list[Request]:
        """Remove and return held requests waiting since before `older_than` (monotonic)."""
        stale = [r for r in self.held.values() if r.enqueued_at < older_than]
        for request in stale:
            del self.held[request.seq_id]
        return stale


def owned_model(models: Mapping[str, ModelRecord], tenant: str, model_id: str) -> ModelRecord:
    """The model `model_id` of `tenant`; another tenant's model is NOT_FOUND, like a missing one."""
    model = models.get(model_id)
    if model is None or model.tenant != tenant:
        raise OpError(
            grpc.StatusCode.NOT_FOUND, f"model_id: unknown model {model_id!r}", "model_id"
        )
    return model


def datum_tokens(datum: common_pb2.Datum) -> int:
    """Number of input tokens of a datum."""
    return sum(len(chunk.encoded_text.tokens) for chunk in datum.model_input.chunks)


def op_tokens(op: trainer_pb2.PlannedOp) -> int:
    """Tokens of forward/backward work an op costs (others cost nothing)."""
    if op.WhichOneof("op") != "forward_backward":
        return 0
    return sum(datum_tokens(d) for d in op.forward_backward.data)
