"""Billed tokens per tenant and op: every kind of work is billed, to the tenant that asked, and a
repeated (model_id, seq_id) is billed once."""

from __future__ import annotations

from prometheus_client import REGISTRY

from fixtures.data import token_batch
from fixtures.scheduler import SchedulerFactory
from treadle import types

from .conftest import TINY, Raw, client, fb_request


def billed(tenant: str, op: str) -> float:
    value = REGISTRY.get_sample_value(
        "treadle_scheduler_billed_tokens_total", {"tenant": tenant, "op": op}
    )
    return value or 0.0


def test_every_op_is_billed_to_its_tenant_and_a_repeat_once(
    make_scheduler: SchedulerFactory,
) -> None:
    ops = ("forward_backward", "forward", "sample", "compute_logprobs")
    before = {op: billed("team-b", op) for op in ops}
    others = {op: billed("team-c", op) for op in ops}
    data = token_batch(length=8)  # 2 datums x 8 tokens
    with make_scheduler() as address, client(address, "tml-team-b") as service:
        training = service.create_lora_training_client(TINY, rank=4)
        raw = Raw(service, training.model_id)
        first, repeat = raw.fb(1, data), raw.fb(1, data)
        first.result(timeout=30), repeat.result(timeout=30)
        forward = fb_request(data)
        forward.forward_only = True
        raw.submit(2, forward_backward=forward).result(timeout=30)
        sampler = service.create_sampling_client(base_model=TINY)
        prompt = types.ModelInput.from_ints([5, 6, 7, 8])
        params = types.SamplingParams(max_tokens=3, temperature=0.0, stop=[])
        sampled = sampler.sample(prompt, 2, params).result(timeout=30)
        sampler.compute_logprobs(prompt).result(timeout=30)
    tokens = sum(d.model_input.length for d in data)
    assert billed("team-b", "forward_backward") - before["forward_backward"] == tokens
    assert billed("team-b", "forward") - before["forward"] == tokens
    generated = sum(len(s.tokens) for s in sampled.sequences)
    assert billed("team-b", "sample") - before["sample"] == generated > 0
    assert billed("team-b", "compute_logprobs") - before["compute_logprobs"] == 4
    assert {op: billed("team-c", op) for op in ops} == others
