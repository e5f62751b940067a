#!/usr/bin/env bash
# Chapter 3.2's optimization ladder on a GPU: the 1B replica (replica:llama-3.2-1b), CUDA graphs for the compiled
# rungs; the CPU-only rungs (our C++ kernel and C++ step, torch.ao dynamic int8) are skipped. For a lent device
# machine, which has torch, transformers, pandas and matplotlib but no network: run it from the repository root
# there, e.g.
#   device run: bash tools/gpu_ladder.sh
# First the CUDA unit tests (a minute), then the ladder. The rows land in data/results/generate_ladder_cuda.csv
# (never mixed with the CPU's generate_ladder.csv) and, when $OUT is set, a copy and the full log go to $OUT.
# Every rung is saved as soon as it is measured, so a run stopped at its time limit keeps what it has.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-}"
log="${OUT:-/tmp}/gpu_ladder.log"
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name(0))" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
# the repository's pytest options load nbval, which the device image lacks: override them
timeout "${TESTS_TIMEOUT:-150}" python3 -m pytest -q -o addopts="-p no:cacheprovider" tests/test_hardware.py \
    tests/test_generate.py -k "cuda" > "${OUT:-/tmp}/gpu_tests.log" 2>&1
grep -E "passed|failed|Error|error|assert" "${OUT:-/tmp}/gpu_tests.log" | tail -12
# perf_hints logs why inductor skips a CUDA graph (e.g. a mutated input that is not a static address)
TORCH_LOGS="${TORCH_LOGS:-perf_hints}" timeout "${LADDER_TIMEOUT:-420}" python3 -m secbook bench --suite generate \
    --model replica:llama-3.2-1b --device cuda --prompt-len 32 --new-tokens 64 --repeats 3 > "$log" 2>&1
rc=$?
grep " | " "$log" | grep -v "skipped:"; grep "^machine:" "$log"
echo "--- CUDA-graph hints in the log (count, message):"
grep -i "cudagraph" "$log" | sed 's/^.*\] //' | sort | uniq -c | sort -rn | head -8
if [ -n "$OUT" ] && [ -f data/results/generate_ladder_cuda.csv ]; then cp data/results/generate_ladder_cuda.csv "$OUT/"; fi
exit $rc
