"""secbook: the helper package behind the book *secbook 秒推 — second-scale LLM inference*.

Each module is one idea of the book: ``models`` (what to run), ``measure`` (how to time it honestly),
``roofline`` (the latency model), ``quantize``/``prune``/``distill`` (compression), ``decoder`` (one
description of every architecture family's decoder and its KV-cache interface), ``generate`` (fast generation
loops; ``ladder`` measures them), ``families`` (which models work), ``pretrained`` (the real model from the
package index), ``tasks`` (a question set: does the model still answer?), ``kernels`` (a C++ int8 kernel and a
whole decode step in C++ of our own), ``engines`` (llama.cpp, CTranslate2 and ONNX Runtime GenAI on the
same weights, timed beside ours), ``hardware`` (devices, dtypes, memory), ``widgets`` (the interactive
panels).
"""
__version__ = "0.1.0"

from .models import available, load  # noqa: E402,F401
from .measure import (Timing, describe_machine, load_results, machine_info, model_bytes, peak_memory,  # noqa: E402,F401
                      perplexity, prompt_ids, results_frame, save_results, time_generation, token_agreement)
from .notebook import setup as notebook_setup  # noqa: E402,F401
from . import pretrained, tasks  # noqa: E402,F401
from .recommend import recommend  # noqa: E402,F401
