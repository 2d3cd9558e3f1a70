"""Training: create a model (fresh or from a checkpoint), forward / forward_backward, optim_step,
save and load state, and describe a model.

Every call answers a future at once. Ops of a model travel on its session's stream with the
SDK's own (model_id, seq_id), so the scheduler runs them in seq_id order, holds one whose
predecessor has not arrived (the SDK sends a large batch's chunks concurrently, the first last),
and runs a retried one once. A request the gateway cannot translate still takes its seq_id: it
goes to the scheduler without an operation, which refuses it in its place, and its future fails
with the gateway's reason, so the model's later requests are not held waiting for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request

from treadle.contract.losses import CROSS_ENTROPY
from treadle.errors import RequestFailedError
from treadle.paths import parse_path
from treadle.v1 import checkpoints_pb2, common_pb2, scheduler_pb2
from treadle_gateway import tinker_public_pb2 as tpb
from treadle_gateway import tinker_wire
from treadle_gateway.errors import GatewayError, bad_input, from_failure
from treadle_gateway.futures import Result, TinkerFuture
from treadle_gateway.gateway import Gateway, api_key, gateway_of
from treadle_gateway.middleware import JSON, PROTOBUF, json_body
from treadle_gateway.schemas import (
    CreateModelRequest,
    LoadWeightsRequest,
    ModelRef,
    OptimStepRequest,
    SaveWeightsForSamplerRequest,
    SaveWeightsRequest,
    WeightsInfoRequest,
)
from treadle_gateway.sessions import GatewaySession, SamplingTarget

router = APIRouter(prefix="/api/v1", tags=["training"])

FB_BODY = {
    "requestBody": {
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": {"type": "object"}},
        }
    }
}


def tinker_path(path: str) -> str:
    """A checkpoint path as the SDK spells it."""
    return "tinker://" + path.removeprefix("treadle://").removeprefix("tinker://")


def future_answer(future: TinkerFuture, **extra: Any) -> dict[str, Any]:
    """The SDK's UntypedAPIFuture."""
    return {"request_id": future.request_id, **extra}


# ---------------------------------------------------------------------- on a session's stream
def submit(
    gateway: Gateway,
    session: GatewaySession,
    kind: str,
    message: scheduler_pb2.Submit,
    answer: Any,
) -> TinkerFuture:
    """Send `message` on the session's stream; the future's result is `answer(Result message)`,
    and its queue position the scheduler's Accepted."""
    started: list[TinkerFuture] = []  # the future, once made: Accepted comes later

    def accepted(message: scheduler_pb2.Accepted) -> None:
        if started:
            started[0].queue_position = message.queue_position

    outcome = session.stream.submit(message, on_accepted=accepted)

    async def work() -> Result:
        try:
            return answer(await outcome)
        except RequestFailedError as exc:
            raise from_failure(exc) from None

    started.append(gateway.futures.start(session.owner, kind, work()))
    return started[0]


def refuse_in_order(
    gateway: Gateway,
    session: GatewaySession,
    kind: str,
    model_id: str,
    seq_id: int,
    error: GatewayError,
) -> TinkerFuture:
    """A future failing with `error`, for a request that still takes its seq_id."""
    outcome = session.stream.submit(scheduler_pb2.Submit(model_id=model_id, seq_id=seq_id))

    async def work() -> Result:
        try:
            await outcome
        except RequestFailedError:
            pass  # the scheduler's refusal of the empty op: the gateway's reason is the one
        raise error

    return gateway.futures.start(session.owner, kind, work())


async def session_base_model(gateway: Gateway, session: GatewaySession, model_id: str) -> str:
    """The base model of one of the session's models (asked of the scheduler once)."""
    base_model = session.models.get(model_id)
    if not base_model:
        info = await gateway.call(
            "GetInfo", scheduler_pb2.GetInfoRequest(model_id=model_id), session.api_key
        )
        base_model = session.models[model_id] = info.base_model
    return base_model


def fb_result(result: scheduler_pb2.Result) -> Result:
    """A forward / forward_backward result, protobuf or JSON as the client asks."""
    output = result.forward_backward

    def render(proto: bool) -> tuple[bytes, str]:
        if proto:
            return tinker_wire.fb_output_proto(output), PROTOBUF
        return orjson.dumps(tinker_wire.fb_output_json(output)), JSON

    return Result(render=render)


# ---------------------------------------------------------------------- routes
@router.post("/create_model")
async def create_model(body: CreateModelRequest, request: Request) -> dict[str, Any]:
    """A new LoRA model `{session}:train:{model_seq_id}` (a retry is the same model)."""
    gateway, key = gateway_of(request), api_key(request)
    session = await gateway.sessions.get(body.session_id, key)
    lora = body.lora_config
    create = scheduler_pb2.CreateModelRequest(
        session_id=session.session_id,
        base_model=body.base_model,
        lora_config=common_pb2.LoraConfig(
            rank=lora.rank,
            train_attn=lora.train_attn,
            train_mlp=lora.train_mlp,
            train_unembed=lora.train_unembed,
        ),
        model_seq_id=body.model_seq_id,
    )
    if lora.seed is not None:
        create.seed = lora.seed
    future = gateway.futures.start(session.owner, "CreateModel", _create(gateway, session, create))
    return future_answer(future, model_id=f"{session.session_id}:train:{body.model_seq_id}")


async def _create(
    gateway: Gateway, session: GatewaySession, create: scheduler_pb2.CreateModelRequest
) -> Result:
    created = await gateway.call("CreateModel", create, session.api_key, timeout=600)
    session.models[created.model_id] = created.info.base_model
    return Result(json={"model_id": created.model_id, "type": "create_model"})


@router.post("/get_info")
async def get_info(body: ModelRef, request: Request) -> dict[str, Any]:
    """A model's base model, architecture, tokenizer and LoRA rank."""
    gateway, key = gateway_of(request), api_key(request)
    await gateway.sessions.of_model(body.model_id, key)
    info = await gateway.call("GetInfo", scheduler_pb2.GetInfoRequest(model_id=body.model_id), key)
    return {
        "model_id": info.model_id,
        "model_data": {
            "arch": info.architecture,
            "model_name": info.base_model,
            "tokenizer_id": _tokenizer_id(gateway, info),
        },
        "is_lora": True,
        "lora_rank": info.lora_config.rank,
        "model_name": info.base_model,
        "type": "get_info",
    }


def _tokenizer_id(gateway: Gateway, info: scheduler_pb2.ModelInfo) -> str:
    """The served tokenizer's folder where this machine has it (get_tokenizer() then loads it
    offline), else its Hugging Face id."""
    if gateway.config.local_tokenizers and info.tokenizer_path:
        if Path(info.tokenizer_path, "tokenizer_config.json").is_file():
            return info.tokenizer_path
    return info.tokenizer_id


@router.post("/forward_backward", openapi_extra=FB_BODY)
async def forward_backward(request: Request) -> dict[str, Any]:
    """forward_backward, or forward (`forward_only`): protobuf (tinker 0.25+) or JSON (0.24)."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith(PROTOBUF):
        return await _fb_proto(request, body)
    return await _fb_json(request, json_body(body), forward_only=False)


@router.post("/forward", openapi_extra=FB_BODY)
async def forward(request: Request) -> dict[str, Any]:
    """tinker 0.24's JSON forward."""
    return await _fb_json(request, json_body(await request.body()), forward_only=True)


async def _fb_proto(request: Request, body: bytes) -> dict[str, Any]:
    message = tpb.ForwardBackwardRequest()
    try:
        message.ParseFromString(body)
    except Exception:  # protobuf's DecodeError and friends
        raise bad_input("body", "not a tinker ForwardBackwardRequest") from None
    try:
        translated: common_pb2.ForwardBackwardRequest | GatewayError = tinker_wire.fb_from_proto(
            message
        )
    except GatewayError as exc:
        translated = exc
    kind = "Forward" if message.forward_only else "ForwardBackward"
    return await _send_fb(request, message.model_id, message.seq_id, kind, translated)


async def _fb_json(request: Request, body: Any, forward_only: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_input("body", "must be a JSON object")
    model_id, seq_id = body.get("model_id"), body.get("seq_id")
    if not isinstance(model_id, str) or not model_id:
        raise bad_input("model_id", "is required")
    if type(seq_id) is not int:
        raise bad_input("seq_id", "must be an integer")
    try:
        translated: common_pb2.ForwardBackwardRequest | GatewayError = tinker_wire.fb_from_json(
            body, forward_only
        )
    except GatewayError as exc:
        translated = exc
    kind = "Forward" if forward_only else "ForwardBackward"
    return await _send_fb(request, model_id, seq_id, kind, translated)


async def _send_fb(
    request: Request,
    model_id: str,
    seq_id: int,
    kind: str,
    translated: common_pb2.ForwardBackwardRequest | GatewayError,
) -> dict[str, Any]:
    gateway = gateway_of(request)
    session = await gateway.sessions.of_model(model_id, api_key(request))
    if isinstance(translated, GatewayError):
        future = refuse_in_order(gateway, session, kind, model_id, seq_id, translated)
        return future_answer(future)
    if translated.forward_only and not translated.loss_fn:
        translated.loss_fn = CROSS_ENTROPY
    message = scheduler_pb2.Submit(model_id=model_id, seq_id=seq_id, forward_backward=translated)
    return future_answer(submit(gateway, session, kind, message, fb_result))


@router.post("/optim_step")
async def optim_step(body: OptimStepRequest, request: Request) -> dict[str, Any]:
    """Apply the accumulated gradient (Adam(W); other optimizers are refused in order)."""
    gateway = gateway_of(request)
    session = await gateway.sessions.of_model(body.model_id, api_key(request))
    if body.adam_params is None:
        kind = (body.optimizer_params or {}).get("type", "unknown")
        error = bad_input("optimizer_params", f"optimizer {kind!r} is not supported: Adam only")
        refused = refuse_in_order(gateway, session, "OptimStep", body.model_id, body.seq_id, error)
        return future_answer(refused)
    adam = common_pb2.AdamParams(**body.adam_params.model_dump())
    message = scheduler_pb2.Submit(
        model_id=body.model_id,
        seq_id=body.seq_id,
        optim_step=common_pb2.OptimStepRequest(adam_params=adam),
    )

    def answer(result: scheduler_pb2.Result) -> Result:
        return Result(json={"metrics": dict(result.optim_step.metrics), "type": "optim_step"})

    return future_answer(submit(gateway, session, "OptimStep", message, answer))


def _save(
    body: SaveWeightsRequest, kind: common_pb2.CheckpointKind, ephemeral: bool = False
) -> common_pb2.SaveCheckpointRequest:
    save = common_pb2.SaveCheckpointRequest(
        name=body.path or "", kind=kind, overwrite=body.overwrite, ephemeral=ephemeral
    )
    if body.ttl_seconds is not None:
        save.ttl_seconds = body.ttl_seconds
    renderer = (body.user_metadata or {}).get("renderer_name")
    if isinstance(renderer, str):
        save.renderer_name = renderer
    return save


@router.post("/save_weights")
async def save_weights(body: SaveWeightsRequest, request: Request) -> dict[str, Any]:
    """save_state: adapter, optimizer state and step, as `tinker://{model}/weights/{name}`."""
    gateway = gateway_of(request)
    session = await gateway.sessions.of_model(body.model_id, api_key(request))
    message = scheduler_pb2.Submit(
        model_id=body.model_id,
        seq_id=body.seq_id,
        save_checkpoint=_save(body, common_pb2.CHECKPOINT_KIND_STATE),
    )

    def answer(result: scheduler_pb2.Result) -> Result:
        path = tinker_path(result.save_checkpoint.checkpoint.path)
        return Result(json={"path": path, "type": "save_weights"})

    return future_answer(submit(gateway, session, "SaveWeights", message, answer))


@router.post("/save_weights_for_sampler")
async def save_weights_for_sampler(
    body: SaveWeightsForSamplerRequest, request: Request
) -> dict[str, Any]:
    """Adapter weights for sampling: named (a path), or unnamed (a new sampling client of them,
    what save_weights_and_get_sampling_client asks for)."""
    gateway = gateway_of(request)
    session = await gateway.sessions.of_model(body.model_id, api_key(request))
    number = body.sampling_session_seq_id
    unnamed = not body.path
    if unnamed and number is None:
        raise bad_input("path", "a name, or sampling_session_seq_id, is required")
    message = scheduler_pb2.Submit(
        model_id=body.model_id,
        seq_id=body.seq_id,
        save_checkpoint=_save(body, common_pb2.CHECKPOINT_KIND_SAMPLER, ephemeral=unnamed),
    )
    base_model = await session_base_model(gateway, session, body.model_id)

    def answer(result: scheduler_pb2.Result) -> Result:
        path = result.save_checkpoint.checkpoint.path
        if not unnamed:
            return Result(json={"path": tinker_path(path), "type": "save_weights_for_sampler"})
        sampling_id = session.sampling_id(number or 0)
        session.sampling[sampling_id] = SamplingTarget(base_model, path)
        return Result(
            json={
                "path": tinker_path(path),
                "sampling_session_id": sampling_id,
                "type": "save_weights_for_sampler",
            }
        )

    return future_answer(submit(gateway, session, "SaveWeightsForSampler", message, answer))


@router.post("/load_weights")
async def load_weights(body: LoadWeightsRequest, request: Request) -> dict[str, Any]:
    """Load a state checkpoint: into an existing model (load_state, in its seq_id order), or as
    a new model `{session}:train:{model_seq_id}` (create_training_client_from_state)."""
    gateway, key = gateway_of(request), api_key(request)
    if body.session_id is not None:
        if body.model_seq_id is None:
            raise bad_input("model_seq_id", "is required with session_id")
        session = await gateway.sessions.get(body.session_id, key)
        create = scheduler_pb2.CreateModelRequest(
            session_id=session.session_id,
            from_state_path=body.path,
            load_optimizer=body.optimizer,
            model_seq_id=body.model_seq_id,
        )

        async def created() -> Result:
            made = await gateway.call("CreateModel", create, session.api_key, timeout=600)
            session.models[made.model_id] = made.info.base_model
            return Result(
                json={"model_id": made.model_id, "path": body.path, "type": "load_weights"}
            )

        future = gateway.futures.start(session.owner, "LoadWeights", created())
        return future_answer(future)
    if body.model_id is None or body.seq_id is None:
        raise bad_input(
            "model_id", "model_id and seq_id, or session_id and model_seq_id, are required"
        )
    session = await gateway.sessions.of_model(body.model_id, key)
    message = scheduler_pb2.Submit(
        model_id=body.model_id,
        seq_id=body.seq_id,
        load_state=common_pb2.LoadStateRequest(path=body.path, load_optimizer=body.optimizer),
    )

    def answer(result: scheduler_pb2.Result) -> Result:
        return Result(json={"path": body.path, "model_id": body.model_id, "type": "load_weights"})

    return future_answer(submit(gateway, session, "LoadWeights", message, answer))


@router.post("/weights_info")
async def weights_info(body: WeightsInfoRequest, request: Request) -> dict[str, Any]:
    """A checkpoint's base model and LoRA configuration (404 when it is not the caller's)."""
    info = await checkpoint_info(gateway_of(request), api_key(request), body.tinker_path)
    lora = info.lora_config
    return {
        "base_model": info.base_model,
        "is_lora": True,
        "lora_rank": lora.rank,
        "train_unembed": lora.train_unembed if lora.HasField("train_unembed") else True,
        "train_mlp": lora.train_mlp if lora.HasField("train_mlp") else True,
        "train_attn": lora.train_attn if lora.HasField("train_attn") else True,
    }


async def checkpoint_info(gateway: Gateway, key: str, path: str) -> common_pb2.CheckpointInfo:
    """The metadata of the caller's checkpoint `path` (400 for a malformed path, 404 when it
    does not exist or is not the caller's)."""
    try:
        parsed = parse_path(path)
    except ValueError as exc:
        raise bad_input("path", str(exc)) from None
    token = ""
    while True:
        page = await gateway.call(
            "ListCheckpoints",
            checkpoints_pb2.ListCheckpointsRequest(
                run_id=parsed.run_id, page_size=500, page_token=token
            ),
            key,
        )
        for info in page.checkpoints:
            if info.path == str(parsed):
                return info
        token = page.next_page_token
        if not token:
            raise GatewayError(404, f"path: no checkpoint {path!r}", "user", "path")
