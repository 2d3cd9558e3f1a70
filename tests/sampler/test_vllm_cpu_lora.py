"""The grouped LoRA ops that replace vLLM's CPU gather-and-einsum ones: the same products, no LoRA
term for index -1, installed in vLLM's processes through its plugin entry point."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch

from treadle_sampler import vllm_cpu_lora

SLOTS, TOKENS = 3, 11


def close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to float32 rounding (the ops sum in another order than einsum)."""
    return torch.allclose(actual, expected, atol=1e-5, rtol=1e-5)


def gathered(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """vLLM's formula, one matrix per token (`weights[indices]`), with -1 as no adapter."""
    product = torch.einsum("bi,boi->bo", inputs, weights.squeeze(1)[indices.clamp(min=0)])
    return product * (indices >= 0)[:, None]


@pytest.fixture
def case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(TOKENS, 24, generator=generator)
    weights = torch.randn(SLOTS, 1, 8, 24, generator=generator)  # vLLM's [slots, 1, out, in]
    indices = torch.tensor([0, 2, 2, -1, 1, 0, -1, 2, 1, 1, 0])
    return inputs, weights, indices


def test_rows_are_each_tokens_own_adapter_product_and_zero_without_one(case) -> None:
    inputs, weights, indices = case
    assert close(vllm_cpu_lora.lora_rows(inputs, weights, indices), gathered(*case))
    one_slot = torch.full((TOKENS,), 2)
    assert close(vllm_cpu_lora.lora_rows(inputs, weights, one_slot), inputs @ weights[2, 0].T)
    assert not vllm_cpu_lora.lora_rows(inputs, weights, torch.full((TOKENS,), -1)).any()


def test_indices_rewritten_in_place_are_grouped_anew(case) -> None:
    inputs, weights, indices = case
    assert close(vllm_cpu_lora.lora_rows(inputs, weights, indices), gathered(*case))
    indices.copy_(indices.flip(0))  # as vLLM rewrites its buffers for the next step
    assert close(vllm_cpu_lora.lora_rows(inputs, weights, indices), gathered(*case))


def test_the_ops_keep_vllms_signatures_and_output_handling(case) -> None:
    from vllm.lora.ops.torch_ops import lora_ops

    inputs, weights, indices = case
    ops = vllm_cpu_lora._make_ops(lora_ops)
    expected = gathered(inputs, weights, indices)

    shrunk = torch.zeros(TOKENS, 10)  # wider than the rank: the tail is left alone
    ops["bgmv_shrink"](inputs, weights, shrunk, indices, 0.5)
    assert close(shrunk[:, :8], 0.5 * expected) and not shrunk[:, 8:].any()

    generator = torch.Generator().manual_seed(1)
    narrow = torch.randn(TOKENS, 8, generator=generator)
    b_weights = torch.randn(SLOTS, 1, 6, 8, generator=generator)
    base = torch.ones(TOKENS, 5)  # the model's width is smaller than the adapter's
    ops["bgmv_expand"](narrow, b_weights, base, indices, add_inputs=True)
    assert close(base, 1 + gathered(narrow, b_weights, indices)[:, :5])

    sliced = torch.ones(TOKENS, 20)
    ops["bgmv_expand_slice"](narrow, b_weights, sliced, indices, 4, 6, add_inputs=False)
    assert close(sliced[:, 4:10], gathered(narrow, b_weights, indices))
    assert (sliced[:, :4] == 1).all() and (sliced[:, 10:] == 1).all()


def test_a_shape_the_grouping_does_not_cover_runs_the_original_op(case) -> None:
    calls: list[tuple[int, ...]] = []

    class Original:
        @staticmethod
        def bgmv_shrink(inputs, weights, output, indices, scaling=1.0) -> None:
            calls.append(tuple(indices.shape))

        bgmv_expand = bgmv_expand_slice = bgmv_shrink

    inputs, weights, _ = case
    vllm_cpu_lora._make_ops(Original)["bgmv_shrink"](
        inputs, weights, torch.zeros(TOKENS, 8), torch.zeros(TOKENS + 1, dtype=torch.long)
    )
    assert calls == [(TOKENS + 1,)]


def test_installed_by_vllms_plugin_entry_point_in_every_vllm_process() -> None:
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert plugins["treadle_cpu_lora"] == "treadle_sampler.vllm_cpu_lora:install"
    vllm_cpu_lora.install()
    vllm_cpu_lora.install()  # idempotent: vLLM calls it once per process, maybe more
    assert lora_ops.bgmv_shrink.__module__ == vllm_cpu_lora.__name__
    assert punica_cpu.bgmv_expand is lora_ops.bgmv_expand
    # the prefill (sgmv) ops call the bgmv ones of their module, so they are grouped too
    assert punica_cpu.sgmv_shrink.__globals__["bgmv_shrink"] is lora_ops.bgmv_shrink
