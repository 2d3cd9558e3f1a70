"""Treadle trainer: one frozen base model, many tenants' LoRA adapters, trained in batched waves."""
