"""The SDK, the scheduler and the trainer give one verdict on every loss request: all accept it,
or all refuse it naming the same field (they read one table, treadle.contract.losses)."""

from __future__ import annotations

import itertools
import math
import typing

import numpy as np
import pytest

from treadle import tensors, types, wire
from treadle.contract import losses
from treadle.errors import ValidationError
from treadle.v1 import common_pb2, scheduler_pb2
from treadle_models import ModelSpec
from treadle_runtime.errors import OpError
from treadle_sampler.validation import prompt_tokens
from treadle_scheduler.validation import check_training_op
from treadle_trainer.inputs import parse_forward_backward
from treadle_trainer.losses import FUNCTIONS, RUNS

VOCAB, MAX_SEQ_LEN = 100, 64
VALID = {losses.CLIP_LOW: 0.5, losses.CLIP_HIGH: 1.5, losses.BETA: 0.1}
BAD_VALUES = [math.nan, math.inf, -1.0]
INPUTS = {
    losses.TARGET_TOKENS: [2, 3, 4, 5],
    losses.WEIGHTS: [1.0, 1.0, 0.5, 0.0],
    losses.LOGPROBS: [-1.0, -0.5, -2.0, -1.5],
    losses.ADVANTAGES: [0.0, 1.0, 1.0, -1.0],
    losses.CLIP_LOW: [0.5, 0.4, 0.3, 0.5],
    losses.CLIP_HIGH: [1.5, 1.6, 1.7, 1.5],
    losses.SEQUENCE_RATIO_MASK: [0.0, 1.0, 1.0, 0.0],
}


def _dtype(name: str) -> type:
    return np.int64 if losses.INPUT_DTYPES[name] == "int64" else np.float32


def _field(check: typing.Callable[[], object]) -> str | None:
    """None when `check` accepts; the field it names when it refuses."""
    try:
        check()
    except (ValidationError, OpError) as exc:
        assert exc.field, f"a refusal without a field: {exc}"
        return exc.field
    return None


def verdicts(
    loss_fn: str,
    config: dict[str, float],
    inputs: dict[str, list[float] | np.ndarray],
    forward_only: bool,
) -> tuple[str | None, str | None, str | None]:
    """(SDK, scheduler, trainer) verdicts on one forward_backward; lists travel in their input's
    dtype, arrays as they are."""
    arrays = {
        name: v if isinstance(v, np.ndarray) else np.asarray(v, dtype=_dtype(name))
        for name, v in inputs.items()
    }
    datum = types.Datum(
        types.ModelInput.from_ints([1, 2, 3, 4]),
        {name: types.TensorData.from_numpy(array) for name, array in arrays.items()},
    )

    def sdk() -> None:
        loss, resolved = wire.check_loss(loss_fn, config, forward_only)
        wire.datums_to_proto([datum], loss.name, resolved)

    request = common_pb2.ForwardBackwardRequest(
        loss_fn=loss_fn, loss_fn_config=config, forward_only=forward_only
    )
    message = request.data.add()
    message.model_input.chunks.add().encoded_text.tokens.extend([1, 2, 3, 4])
    for name, array in arrays.items():
        message.loss_fn_inputs[name].CopyFrom(tensors.encode(array))
    submit = scheduler_pb2.Submit(model_id="m", seq_id=1, forward_backward=request)

    def scheduler() -> None:
        check_training_op(submit, max_datums=16, max_tokens=1024, loss_fns=RUNS)

    def trainer() -> None:
        parse_forward_backward(request, VOCAB, MAX_SEQ_LEN)

    return _field(sdk), _field(scheduler), _field(trainer)


def config_cases() -> list[dict[str, float]]:
    """Every subset of the config keys with valid values, then each key with each bad value,
    and clip thresholds in the wrong order."""
    cases = [
        {key: VALID[key] for key in subset}
        for size in range(len(losses.CONFIG_KEYS) + 1)
        for subset in itertools.combinations(losses.CONFIG_KEYS, size)
    ]
    cases += [{key: bad} for key in losses.CONFIG_KEYS for bad in BAD_VALUES]
    cases.append({losses.CLIP_LOW: 1.5, losses.CLIP_HIGH: 0.5})
    return cases


@pytest.mark.parametrize("loss_fn", list(losses.LOSSES))
def test_every_config_combination_gets_one_verdict(loss_fn: str) -> None:
    inputs = {name: INPUTS[name] for name in losses.LOSSES[loss_fn].inputs}
    for config, forward_only in itertools.product(config_cases(), (False, True)):
        sdk, scheduler, trainer = verdicts(loss_fn, config, inputs, forward_only)
        assert sdk == scheduler == trainer, (
            loss_fn,
            config,
            forward_only,
            (sdk, scheduler, trainer),
        )


def test_beta_with_ppo_is_refused_by_all_three_naming_the_key() -> None:
    inputs = {name: INPUTS[name] for name in losses.LOSSES[losses.PPO].inputs}
    assert verdicts(losses.PPO, {losses.BETA: 0.1}, inputs, False) == ("loss_fn_config.beta",) * 3


def test_dro_without_beta_is_refused_by_all_three() -> None:
    inputs = {name: INPUTS[name] for name in losses.LOSSES[losses.DRO].inputs}
    assert verdicts(losses.DRO, {}, inputs, False) == ("loss_fn_config.beta",) * 3


@pytest.mark.parametrize("loss_fn", list(losses.LOSSES))
def test_every_input_combination_gets_one_verdict(loss_fn: str) -> None:
    for size in range(len(INPUTS) + 1):
        for names in itertools.combinations(INPUTS, size):
            inputs = {name: INPUTS[name] for name in names}
            config = {key: VALID[key] for key in losses.LOSSES[loss_fn].config}
            sdk, scheduler, trainer = verdicts(loss_fn, config, inputs, False)
            # the scheduler's door checks no datum contents; SDK and trainer check them alike
            assert scheduler is None
            assert sdk == trainer, (loss_fn, names, (sdk, trainer))


def _rl(**extra: list[float] | np.ndarray) -> dict[str, list[float] | np.ndarray]:
    return {**{name: INPUTS[name] for name in losses.RL_INPUTS}, **extra}


@pytest.mark.parametrize("loss_fn", [losses.GSPO, losses.STABLE_REINFORCE])
@pytest.mark.parametrize("name", losses.RL_INPUTS)
def test_the_new_losses_without_a_required_input_are_refused_naming_it(
    loss_fn: str, name: str
) -> None:
    inputs = {k: v for k, v in _rl().items() if k != name}
    sdk, scheduler, trainer = verdicts(loss_fn, {}, inputs, False)
    assert sdk == trainer == f"data[0].loss_fn_inputs.{name}" and scheduler is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (losses.CLIP_LOW, [0.5, math.nan, 0.5, 0.5]),
        (losses.CLIP_HIGH, [1.5, 1.5, math.inf, 1.5]),
        (losses.SEQUENCE_RATIO_MASK, [1.0, 1.0, -math.inf, 1.0]),
        (losses.CLIP_LOW, np.array([0, 0, 0, 1], np.int64)),
        (losses.SEQUENCE_RATIO_MASK, np.array([1, 1, 0, 0], np.int64)),
        (losses.CLIP_HIGH, [1.5, 1.5, 1.5]),
    ],
    ids=["NaN low", "inf high", "-inf mask", "int64 low", "int64 mask", "short high"],
)
@pytest.mark.parametrize("loss_fn", [losses.PPO, losses.GSPO, losses.STABLE_REINFORCE])
def test_a_bad_optional_input_is_refused_naming_it(
    loss_fn: str, name: str, value: list[float] | np.ndarray
) -> None:
    sdk, scheduler, trainer = verdicts(loss_fn, {}, _rl(**{name: value}), False)
    assert sdk == trainer == f"data[0].loss_fn_inputs.{name}" and scheduler is None


@pytest.mark.parametrize(
    "loss_fn", [losses.PPO, losses.CISPO, losses.GSPO, losses.STABLE_REINFORCE]
)
def test_per_token_thresholds_out_of_order_are_refused_naming_them(loss_fn: str) -> None:
    config = {losses.CLIP_LOW: 0.5, losses.CLIP_HIGH: 1.5}
    low_above_config = _rl(**{losses.CLIP_LOW: [0.5, 1.6, 0.5, 0.5]})
    high_below_config = _rl(**{losses.CLIP_HIGH: [1.5, 1.5, 0.4, 1.5]})
    crossed = _rl(**{losses.CLIP_LOW: [0.9] * 4, losses.CLIP_HIGH: [1.2, 0.8, 1.2, 1.2]})
    for inputs, name in (
        (low_above_config, losses.CLIP_LOW),
        (high_below_config, losses.CLIP_HIGH),
        (crossed, losses.CLIP_LOW),
    ):
        sdk, scheduler, trainer = verdicts(loss_fn, config, inputs, False)
        assert sdk == trainer == f"data[0].loss_fn_inputs.{name}" and scheduler is None
    # thresholds a loss does not use are accepted, whatever their order
    assert verdicts(losses.IMPORTANCE_SAMPLING, {}, crossed, False) == (None,) * 3


@pytest.mark.parametrize(
    ("loss_fn", "forward_only"), [("hinge", False), ("hinge", True), ("", False), ("PPO", False)]
)
def test_unknown_losses_get_one_verdict(loss_fn: str, forward_only: bool) -> None:
    targets = {losses.TARGET_TOKENS: INPUTS[losses.TARGET_TOKENS]}
    assert verdicts(loss_fn, {}, targets, forward_only) == ("loss_fn",) * 3


def test_a_forward_may_leave_the_loss_empty() -> None:
    targets = {losses.TARGET_TOKENS: INPUTS[losses.TARGET_TOKENS]}
    assert verdicts("", {}, targets, True) == (None,) * 3


def test_the_trainer_runs_every_loss_of_the_table() -> None:
    assert set(FUNCTIONS) == set(losses.LOSSES)
    assert RUNS == tuple(losses.LOSSES)
    assert typing.get_args(losses.LossName) == tuple(losses.LOSSES)


TOKEN_CASES = {
    "negative id": [[1, -2, 3]],
    "negative id in a later chunk": [[1, 2], [3, -4]],
    "empty input": [[]],
    "no chunks": [],
    "id past the vocabulary": [[1, VOCAB]],
}


def _model_input(chunks: list[list[int]]) -> types.ModelInput:
    return types.ModelInput([types.EncodedTextChunk(tokens=list(c)) for c in chunks])


@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_token_ids_get_one_verdict_from_the_sdk_and_the_trainer(case: str) -> None:
    """The SDK checks what it can without the model (negative ids, empty inputs) exactly as the
    trainer does; an id past the vocabulary only the trainer can know of."""
    chunks = TOKEN_CASES[case]
    length = sum(len(c) for c in chunks)
    targets = types.TensorData.from_numpy(np.ones(length, dtype=np.int64))
    datum = types.Datum(_model_input(chunks), {losses.TARGET_TOKENS: targets})

    def sdk() -> None:
        wire.datums_to_proto([datum], losses.CROSS_ENTROPY)

    request = common_pb2.ForwardBackwardRequest(loss_fn=losses.CROSS_ENTROPY)
    message = request.data.add()
    for chunk in chunks:
        message.model_input.chunks.add().encoded_text.tokens.extend(chunk)
    message.loss_fn_inputs[losses.TARGET_TOKENS].CopyFrom(
        tensors.encode(np.ones(length, dtype=np.int64))
    )

    def trainer() -> None:
        parse_forward_backward(request, VOCAB, MAX_SEQ_LEN)

    expected = "data[0].model_input"
    assert _field(trainer) == expected
    assert _field(sdk) == (None if case == "id past the vocabulary" else expected)


@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_prompt_token_ids_get_one_verdict_from_the_sdk_and_the_sampler(case: str) -> None:
    chunks = TOKEN_CASES[case]
    spec = ModelSpec(
        name="m", vocab_size=VOCAB, max_seq_len=MAX_SEQ_LEN, architecture="", tokenizer_id=""
    )
    prompt = common_pb2.ModelInput()
    for chunk in chunks:
        prompt.chunks.add().encoded_text.tokens.extend(chunk)
    sdk_verdict = _field(lambda: wire.model_input_to_proto(_model_input(chunks), "prompt"))
    assert _field(lambda: prompt_tokens(prompt, spec)) == "prompt"
    assert sdk_verdict == (None if case == "id past the vocabulary" else "prompt")
