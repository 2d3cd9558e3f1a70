"""Where a model runs and in which precision: the one meaning of device and dtype "auto".

`auto` device is cuda when a GPU is present, else the CPU; `auto` dtype is bfloat16 on cuda and
float32 elsewhere (CPU kernels are fastest, and exact enough for the 1e-4 logprob agreement, in
float32). Trainer and sampler configs offer these names and resolve them here.
"""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def pick_device(name: str) -> torch.device:
    """The device `name` stands for (`auto`: cuda when present)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def dtype_name(name: str, device: torch.device | str) -> str:
    """The dtype `name` stands for on `device` (`auto`: bfloat16 on cuda, float32 elsewhere)."""
    if name == "auto":
        return "bfloat16" if torch.device(device).type == "cuda" else "float32"
    if name not in DTYPES:
        raise ValueError(f"dtype: {name!r} is not auto or one of {', '.join(DTYPES)}")
    return name


def pick_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """The torch dtype `name` stands for on `device`."""
    return DTYPES[dtype_name(name, device)]
