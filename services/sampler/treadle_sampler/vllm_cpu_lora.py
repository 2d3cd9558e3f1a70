"""Grouped LoRA matmuls for vLLM's CPU backend, installed in every vLLM process as a plugin.

vLLM's CPU LoRA ops (`vllm.lora.ops.torch_ops`) gather every token's adapter matrices,
`weights[indices]`, into a [tokens, out, in] copy and contract it with einsum, so their cost grows
with tokens × matrix size. With rank-16 adapters on every projection and on lm_head, a batch of 48
sequences samples 4× slower with LoRA than without it, and 4× slower than one batched matmul per
adapter would. Here the tokens of each adapter slot are one matmul against that slot's matrix, as
vLLM's GPU kernels do; only the arithmetic's grouping changes.

A token whose index is -1 has no adapter (vLLM's own meaning of -1, see
`vllm.lora.punica_wrapper.utils`) and gets no LoRA term; the gather read the last slot for it,
which is another adapter's once every slot is taken.

vLLM runs its model in child processes, so the replacement is a `vllm.general_plugins` entry
point (the sampler's pyproject.toml), which vLLM calls in each of them before the model loads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_GROUPS: list = []  # [the last indices seen, their slot_rows]


def slot_rows(indices: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """(slot, its rows) for every adapter slot in `indices`, rows None when the slot has them all.

    Every LoRA layer of a step reads the same indices, so the last grouping is kept while they
    are equal (one comparison instead of a unique and a nonzero per slot; vLLM's inference
    tensors carry no version to tell a rewrite by)."""
    if _GROUPS and torch.equal(_GROUPS[0], indices):
        return _GROUPS[1]
    slots = torch.unique(indices).tolist()
    groups: list[tuple[int, torch.Tensor | None]]
    if len(slots) == 1:
        groups = [] if slots[0] < 0 else [(int(slots[0]), None)]
    else:
        groups = [(int(s), (indices == s).nonzero().squeeze(1)) for s in slots if s >= 0]
    _GROUPS[:] = [indices.clone(), groups]
    return groups


def lora_rows(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Row t is `inputs[t] @ weights[indices[t]].T`, or zeros where `indices[t]` < 0.

    `weights` is [slots, out, in] or vLLM's stacked [slots, 1, out, in]; the result has
    `inputs`' dtype."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    groups = slot_rows(indices)
    if len(groups) == 1 and groups[0][1] is None:
        return inputs @ weights[groups[0][0]].to(inputs.dtype).T
    out = inputs.new_zeros((inputs.shape[0], weights.shape[1]))
    for slot, rows in groups:
        assert rows is not None
        matrix = weights[slot].to(inputs.dtype)
        out.index_copy_(0, rows, inputs.index_select(0, rows) @ matrix.T)
    return out


def _grouped(
    inputs: torch.Tensor, weights: torch.Tensor, output: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor | None:
    """The op's product by `lora_rows`, or None where its shapes are not one index per input row
    (then the original op runs)."""
    if indices.dim() != 1 or indices.shape[0] != inputs.shape[0] or inputs.dim() != 2:
        return None
    return lora_rows(inputs.to(output.dtype), weights, indices)


def _make_ops(ops: Any) -> dict[str, Callable[..., None]]:
    """Replacements of `ops`' three bgmv functions, same signatures and output handling."""
    shrink, expand, expand_slice = ops.bgmv_shrink, ops.bgmv_expand, ops.bgmv_expand_slice

    def bgmv_shrink(
        inputs: torch.Tensor,
        lora_b_weights: torch.Tensor,
        output_tensor: torch.Tensor,
        lora_indices_tensor: torch.Tensor,
        scaling: float = 1.0,
    ) -> None:
        outputs = _grouped(inputs, lora_b_weights, output_tensor, lora_indices_tensor)
        if outputs is None:
            shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling)
            return
        output_tensor[:, : outputs.shape[1]] = scaling * outputs

    def bgmv_expand(
        inputs: torch.Tensor,
        lora_b_weights: torch.Tensor,
        output_tensor: torch.Tensor,
        lora_indices_tensor: torch.Tensor,
        add_inputs: bool = True,
    ) -> None:
        outputs = _grouped(inputs, lora_b_weights, output_tensor, lora_indices_tensor)
        if outputs is None or outputs.shape[0] != output_tensor.shape[0]:
            expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs)
            return
        # adapter and model may pad their output widths differently (vLLM's own rule)
        width = min(outputs.shape[1], output_tensor.shape[1])
        if add_inputs:
            output_tensor[:, :width] += outputs[:, :width]
        else:
            output_tensor[:, :width] = outputs[:, :width]

    def bgmv_expand_slice(
        inputs: torch.Tensor,
        lora_b_weights: torch.Tensor,
        output_tensor: torch.Tensor,
        lora_indices_tensor: torch.Tensor,
        slice_offset: int,
        slice_size: int,
        add_inputs: bool = True,
    ) -> None:
        outputs = _grouped(inputs, lora_b_weights, output_tensor, lora_indices_tensor)
        if outputs is None:
            expand_slice(
                inputs,
                lora_b_weights,
                output_tensor,
                lora_indices_tensor,
                slice_offset,
                slice_size,
                add_inputs,
            )
            return
        if add_inputs:
            output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
        else:
            output_tensor[:, slice_offset : slice_offset + slice_size] = outputs

    return {
        "bgmv_shrink": bgmv_shrink,
        "bgmv_expand": bgmv_expand,
        "bgmv_expand_slice": bgmv_expand_slice,
    }


def install() -> None:
    """Replace vLLM's CPU bgmv ops with the grouped ones (idempotent; the sgmv ops, which
    prefill uses, call the bgmv ones of their module). The `vllm.general_plugins` entry point."""
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without the torch ops: nothing to replace
        return
    if lora_ops.bgmv_shrink.__module__ == __name__:  # installed already in this process
        return
    for name, op in _make_ops(lora_ops).items():
        setattr(lora_ops, name, op)
        setattr(punica_cpu, name, op)
