#!/usr/bin/env bash
# Chapter 3.2's optimization ladder on a GPU: the 1B replica (replica:llama-3.2-1b), CUDA graphs for the compiled
# rungs; the CPU-only rungs (our C++ kernel and C++ step) are skipped. For a lent device machine, which has
# torch, transformers, pandas and matplotlib but no network: run it from the repository root there, e.g.
#   device run: bash tools/gpu_ladder.sh            (the rows land in data/results/generate_ladder.csv
#                                                    and, when $OUT is set, a copy in $OUT)
# Every rung is saved as soon as it is measured, so a run stopped at its time limit keeps what it has.
# Not yet run on a GPU (no session so far was lent one): check the first run's output closely.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name(0))" || exit 1
timeout "${LADDER_TIMEOUT:-480}" python3 -m secbook bench --suite generate --model replica:llama-3.2-1b --device cuda \
    --prompt-len 32 --new-tokens 64 --repeats 3
rc=$?
if [ -n "${OUT:-}" ]; then cp data/results/generate_ladder.csv "$OUT/"; fi
exit $rc
