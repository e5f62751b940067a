"""What hardware is here, and which device and dtype to use on it."""
from __future__ import annotations

import torch

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve ``"auto"`` to the best device present (CUDA > MPS > CPU) and check an explicit request.

    Asking for a device this machine lacks raises a ``ValueError`` that says what is available, rather
    than failing later inside a kernel.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for, but this machine has no CUDA GPU visible to torch "
                             "(torch.cuda.is_available() is False). Use device='cpu', or device='auto' to "
                             "take the best device present; on Colab pick Runtime > Change runtime type > GPU.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(dev)!r} was asked for, but only {torch.cuda.device_count()} "
                             f"CUDA device(s) exist (cuda:0..cuda:{torch.cuda.device_count() - 1}).")
    elif dev.type == "mps" and not mps_available():
        raise ValueError("device='mps' was asked for, but Apple MPS is not available here; use 'cpu' or 'auto'.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {str(device)!r}; use 'cpu', 'cuda', 'mps' or 'auto'.")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Turn ``"bf16"``-style names into torch dtypes; ``None`` stays ``None``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(DTYPES))}") from None
