"""The first cell of every chapter: quiet library chatter, seed, say which machine measures.

Chapters print measurements, so their outputs should hold measurements, not deprecation warnings, progress bars
or compiler logs from the libraries underneath; and every random choice should be repeatable. ``setup()`` does
both in one call (d2l's chapters open the same way with their own helpers) and returns the machine description
each chapter prints next to its numbers.
"""
from __future__ import annotations

import logging
import warnings

QUIET_LOGGERS = ("transformers", "torchao", "torch.utils._pytree", "torch._inductor", "torch._dynamo",
                 "accelerate", "bitsandbytes", "torch.onnx", "onnxscript")


def setup(seed: int = 0) -> str:
    """Ignore warnings, set the noisy libraries' loggers to ERROR, turn off transformers' progress bars, seed
    torch with ``seed``; return :func:`secbook.measure.describe_machine`."""
    import torch
    from transformers.utils import logging as hf_logging

    from .measure import describe_machine

    warnings.filterwarnings("ignore")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.manual_seed(seed)
    return describe_machine()
