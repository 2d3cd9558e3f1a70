"""Treadle sampler: sampling and prompt logprobs for many tenants' LoRA adapters."""
