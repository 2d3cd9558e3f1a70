"""Cheap checks the scheduler makes before queueing a request (the trainer checks the rest).

Refusing at the door keeps bad requests out of cycles: a loss the model's trainer does not run, a
bad loss config, an empty or oversize batch, or a malformed checkpoint path fails at once with
INVALID_ARGUMENT naming the field. The loss checks are the contract's (treadle.contract.losses),
the ones the SDK and the trainer run, so all three give the same verdict.
"""

from __future__ import annotations

from treadle.contract import losses
from treadle.paths import parse_path
from treadle.v1 import common_pb2, scheduler_pb2
from treadle_runtime.errors import invalid
from treadle_scheduler.models import datum_tokens


def check_training_op(
    submit: scheduler_pb2.Submit, max_datums: int, max_tokens: int, loss_fns: tuple[str, ...]
) -> None:
    """Validate a training op's envelope and payload size; `loss_fns` are the losses the
    model's trainer runs (its capability)."""
    kind = submit.WhichOneof("op")
    if kind == "forward_backward":
        request = submit.forward_backward
        loss = losses.loss_for(request.loss_fn, request.forward_only, loss_fns)
        losses.resolve_config(loss, request.loss_fn_config)
        if not request.data:
            raise invalid("data", "at least one datum is required")
        if len(request.data) > max_datums:
            raise invalid("data", f"{len(request.data)} datums exceed the limit of {max_datums}")
        tokens = sum(datum_tokens(d) for d in request.data)
        if tokens > max_tokens:
            raise invalid("data", f"{tokens} tokens exceed the per-request limit of {max_tokens}")
    elif kind == "save_checkpoint":
        if submit.save_checkpoint.kind not in (
            common_pb2.CHECKPOINT_KIND_STATE,
            common_pb2.CHECKPOINT_KIND_SAMPLER,
        ):
            raise invalid("save_checkpoint.kind", "must be STATE or SAMPLER")
        if (
            submit.save_checkpoint.HasField("ttl_seconds")
            and submit.save_checkpoint.ttl_seconds < 0
        ):
            raise invalid("save_checkpoint.ttl_seconds", "must be >= 0")
    elif kind == "load_state":
        check_path("load_state.path", submit.load_state.path, kind="state")
    elif kind is None:
        raise invalid("op", "Submit carries no operation")


def check_path(field: str, path: str, kind: str | None = None) -> None:
    """Validate a checkpoint path (and its kind)."""
    try:
        parsed = parse_path(path)
    except ValueError as exc:
        raise invalid(field, str(exc)) from None
    if kind is not None and parsed.kind != kind:
        raise invalid(field, f"{path!r} is a {parsed.kind} checkpoint, a {kind} one is needed")
