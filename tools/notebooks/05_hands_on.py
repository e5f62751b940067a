"""Chapter 5 — Hands-on project: the source's SimpleLLM, its bug, the fix, and a transformer beside it."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "05_hands_on"

CELLS = [
    md(r"""
# Hands-on project: a small "LLM", its hidden bug, and a fair race

The source closes its technical part with a hands-on project: set up an environment, write a small
language model — an embedding, an LSTM {cite}`hochreiter1997lstm` and a linear output layer — and run
inference with it. This chapter does exactly that, and then does what the source does not: it checks
the model's output, finds that the model silently ignores all but one of its input tokens, fixes it,
and times the buggy model, the fixed model and a transformer {cite}`vaswani2017attention` of the same
size with **one** timing harness on the machine that builds this page.

The lesson is general: **a fast model that computes the wrong thing is not an optimisation**. Before
timing anything, check that it computes what you think it does.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import torch
import matplotlib.pyplot as plt
from secbook import handson
print("measured on:", machine)
"""),
    md(r"""
## The environment

The source lists the software a reader needs before starting. Here is that list, checked on the machine
running this page (a component reported as *absent* is simply not needed on this machine: without a CUDA
GPU everything runs on the CPU).
"""),
    code(r"""
handson.environment()
"""),
    md(r"""
## The model, as the source writes it

A vocabulary of 10 000 tokens, 256-dimensional embeddings, an LSTM with 512 hidden units and a linear
layer back to the vocabulary. The forward pass embeds the tokens, runs the LSTM and predicts the next token
from `out[:, -1, :]`, "the output after the last token". Read the class in `secbook/handson.py`: it is
ten lines. The input is one random sequence of 10 token ids, `torch.randint(0, 10000, (1, 10))`.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
buggy = handson.build("buggy")
print(buggy)
print("parameters:", f"{handson.n_params(buggy):,}")
"""),
    code(r"""
x = torch.randint(0, 10000, (1, 10))
with torch.no_grad():
    logits = buggy(x)
print("input", tuple(x.shape), "-> logits", tuple(logits.shape),
      "-> predicted next token", logits.argmax(-1).item())
"""),
    md(r"""
It runs, and the output has the shape we expect: one row of 10 000 scores for one sequence. Nothing looks
wrong. That is what makes this bug dangerous.

## The bug

`nn.LSTM` expects its input as `[sequence, batch, features]` unless it is built with `batch_first=True`
(see the PyTorch documentation of `nn.LSTM`). The embedding produces `[batch=1, sequence=10, 256]`, so the
LSTM reads it as **10 sequences of length 1**. Its output has the same layout, and `out[:, -1, :]` takes the
*last of the 10 one-token sequences* — the LSTM's state after seeing the 10th token **alone**. Let us print
the shapes as the LSTM understands them:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
for k, v in handson.lstm_shapes(buggy, x).items():
    print(f"{k:>20}: {v}")
"""),
    md(r"""
A test that needs no shapes at all: keep the last token, replace the nine tokens before it by other random
tokens, and see how much the next-token scores change. For a language model they must change — the context
is the whole point. `context_sensitivity` returns the largest change of any score.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print("buggy: largest change of the next-token scores =", handson.context_sensitivity(buggy))
"""),
    md(r"""
Exactly zero: the buggy model's prediction does not depend on anything but the last token. It is a bigram
model with an LSTM's cost.

## The fix

One argument: `nn.LSTM(..., batch_first=True)`. Now the LSTM reads one sequence of 10 tokens, and
`out[:, -1, :]` is its state after the whole sequence. (Two equivalent fixes: transpose the input to
`[sequence, batch, features]`, or read the final hidden state `h[-1]`; exercise 3 checks one of them.)
"""),
    code(r"""
fixed = handson.build("fixed")   # same seed, so the very same weights as `buggy`
for k, v in handson.lstm_shapes(fixed, x).items():
    print(f"{k:>20}: {v}")
print("fixed: largest change of the next-token scores =", round(handson.context_sensitivity(fixed), 4))
"""),
    md(r"""
## A transformer of the same size

For contrast, a decoder-only transformer of the Llama family {cite}`touvron2023llama` built with
transformers' `LlamaConfig`: hidden size 256, 5 layers, 4 heads, MLP 768, the same 10 000-token vocabulary
and, like `SimpleLLM`, separate input and output embeddings. Its parameter count lands within about 1 % of
the LSTM model's:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
transformer = handson.build("transformer")
models = {"SimpleLLM (buggy)": buggy, "SimpleLLM (fixed)": fixed, "Llama-style transformer": transformer}
for name, m in models.items():
    print(f"{name:>24}: {handson.n_params(m):>10,} parameters")
print("transformer: largest change of the next-token scores > 0:", handson.context_sensitivity(transformer) > 0)
"""),
    md(r"""
## Timing all three with one harness

Two measurements, the same for every model:

* **forward** — the time to compute next-token scores for one sequence of 10, 64 and 256 tokens
  (`handson.time_call`: two warm-up calls, then the median of five);
* **generate** — greedy generation of 16 tokens after a 10-token prompt, timed by the book's standard
  harness `secbook.measure.time_generation` (time to first token, time per output token, tokens/s; medians
  after warm-up). The fixed LSTM carries its `(h, c)` state, one LSTM step per new token; the transformer
  uses its KV cache through `generate`; the buggy model has no state to carry and, like the source's code,
  re-runs its forward pass on the whole sequence.

This machine is shared and small, so the absolute times are noisy; compare within the table.
"""),
    code(r"""
table = handson.timing_table(models, seq_lens=(10, 64, 256), prompt_len=10, new_tokens=16, repeats=5)
table.round(2)
"""),
    code(r"""
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
fwd = table[table.task == "forward"]
for name, grp in fwd.groupby("model", sort=False):
    a.plot(grp.seq_len, grp.median_ms, "o-", label=name)
a.set(xlabel="sequence length (tokens)", ylabel="forward latency, median (ms)", title="next-token scores for one sequence")
a.legend()
gen = table[table.task == "generate"]
b.barh(gen.model, gen.tokens_per_s, color=["tab:blue", "tab:orange", "tab:green"])
b.set(xlabel="decode tokens/s (1 / TPOT)", title="greedy generation, 16 new tokens")
fig.suptitle("measured on: " + secbook.describe_machine(), fontsize=8)
plt.tight_layout(); plt.show()
"""),
    md(r"""
What to read from it (the numbers above are this run's; the reasons below do not depend on them):

* The **buggy** forward pass grows far more slowly with the sequence than the fixed one: it runs all tokens as
  independent one-step "sequences" in parallel — fast, and wrong.
* The **fixed** LSTM must walk the sequence one token at a time (each step needs the previous state), so its
  forward time grows linearly with length and cannot use the parallelism of the hardware across positions.
* The **transformer** processes all positions of the prompt at once (matrix–matrix products), which is why
  transformers replaced recurrent networks for long inputs. In generation both the fixed LSTM (with its
  state) and the transformer (with its KV cache) do a fixed amount of work per new token plus, for the
  transformer, attention over the cache; at this size per-call overhead dominates, a theme of the chapter
  on algorithm optimization.
* The buggy model's generation gets slower with every token because it recomputes everything: the
  difference between "an inference loop" and "an inference loop with state".

## Exercises

**Exercise 1.** Count the parameters of `SimpleLLM` by hand: embedding, LSTM (PyTorch's LSTM has four gates,
each with input weights, recurrent weights and *two* bias vectors), output layer. Check your total with
`secbook.exercises.check_simplellm_params(total)`.
"""),
    solution(r"""
from secbook.exercises import check_simplellm_params
V, E, H = 10000, 256, 512
embedding = V * E
lstm = 4 * (H * E + H * H + 2 * H)
fc = H * V + V
check_simplellm_params(embedding + lstm + fc)
"""),
    md(r"""
**Exercise 2.** Feed the buggy model a batch of **4** sequences of length 10, `torch.randint(0, 10000, (4, 10))`.
What shape do the logits have, and which tokens does row 2 of the output depend on? Predict first, then verify
by changing tokens and watching the output.
"""),
    solution(r"""
xb = torch.randint(0, 10000, (4, 10))
with torch.no_grad():
    y = buggy(xb)
print("logits:", tuple(y.shape), "- looks like a batch of 4 predictions")
# The LSTM reads [seq=4, batch=10]: out[:, -1, :] is the 10th "sequence" (column 9) at time steps 0..3.
# Row 2 therefore depends on xb[0:3, 9] - the last token of sequences 0, 1 and 2 - and on nothing else.
xc = xb.clone(); xc[:, :9] = torch.randint(0, 10000, (4, 9)); xc[3, 9] = 7
with torch.no_grad():
    print("row 2 unchanged after editing columns 0-8 and xb[3, 9]:", torch.equal(buggy(xc)[2], y[2]))
"""),
    md(r"""
**Exercise 3.** Fix the model *without* `batch_first=True`: keep the buggy `SimpleLLM` (its LSTM stays
`batch_first=False`) and write a forward function that transposes the embeddings to `[sequence, batch, features]`
and takes the last time step correctly. Show that it gives the same logits as `FixedSimpleLLM` built with the
same seed.
"""),
    solution(r"""
def forward_transposed(m, ids):
    emb = m.embedding(ids).transpose(0, 1)         # [seq, batch, features]
    out, _ = m.lstm(emb)                            # [seq, batch, hidden]
    return m.fc(out[-1])                            # last time step, every sequence
with torch.no_grad():
    same = torch.allclose(forward_transposed(buggy, x), fixed(x), atol=1e-5)
print("same logits as FixedSimpleLLM:", same)
"""),
    md(r"""
**Exercise 4.** Extend the timing to sequences of 1024 tokens for the fixed LSTM and the transformer
(`handson.timing_table(..., seq_lens=(1024,))`). Which grows faster from 256 to 1024 on this machine, and why
would a GPU widen the gap?
"""),
    solution(r"""
# On a GPU the transformer's prefill is a few large matrix products that fill the device, while the LSTM
# still needs 1024 dependent steps, each too small to use it: the gap widens.
for name, m in {"fixed LSTM": fixed, "transformer": transformer}.items():
    ms = {n: 1e3 * handson.time_call(lambda: handson.last_token_logits(m, torch.randint(0, 10000, (1, n))),
                                     warmup=1, repeats=3)["median_s"] for n in (256, 1024)}
    print(f"{name:>12}: 256 tokens {ms[256]:.0f} ms, 1024 tokens {ms[1024]:.0f} ms, ratio {ms[1024] / ms[256]:.1f}x")
"""),
]
