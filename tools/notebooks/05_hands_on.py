"""Chapter 5 — Hands-on project: the source's SimpleLLM, its bug, the fix, and a transformer beside it."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

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

The lesson is general: **a fast model that computes the wrong thing is not an optimization**. Before
timing anything, check that it computes what you think it does. The chapter ends with the same project done
with a real model: the inference loop of a chatbot, written by hand, on SmolLM2-135M-Instruct.
"""),
    opening(["read a model's tensor shapes as the layers see them, and catch a silent layout bug with a test",
             "time several models with one harness, in turn, and word the result from the measurement",
             "explain why an LSTM walks its input one token at a time and a transformer does not",
             "write the inference loop of a chatbot by hand: chat template, prefill, greedy steps with a KV cache"],
            ["Python and basic PyTorch (modules, tensors, shapes)",
             "chapter 1 (prefill, decode, TTFT, TPOT, tokens/s) and chapter 3.2 (the KV cache)"], 30),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import statistics
import torch, pandas as pd
import matplotlib.pyplot as plt
from secbook import handson
from secbook.claims import compare, guard, say, times, times_zh
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
guard(handson.context_sensitivity(buggy) == 0.0, "the buggy model's prediction ignores every token but the last")
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
guard(handson.context_sensitivity(fixed) > 0, "the fixed model's prediction depends on the earlier tokens")
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
* **generate** — greedy generation of 16 tokens after a 10-token prompt. The fixed LSTM carries its `(h, c)`
  state, one LSTM step per new token; the transformer uses its KV cache through `generate`; the buggy model has
  no state to carry and, like the source's code, re-runs its forward pass on the whole sequence for every new
  token. The three are timed *in turn* — buggy, fixed, transformer, buggy, fixed, … — so that a change in the
  machine's load hits all of them alike (`handson.generation_in_turn`, built on
  `secbook.measure.tok_s_in_turn`), and compared round by round.
"""),
    code(r"""
fwd = handson.forward_table(models, seq_lens=(10, 64, 256), repeats=5)
speeds = handson.generation_in_turn(models, prompt_len=10, new_tokens=16, rounds=5)
gen = pd.DataFrame({name: {"median tokens/s": statistics.median(v), "slowest round": min(v), "fastest round": max(v)}
                    for name, v in speeds.items()}).T
print("measured on:", secbook.describe_machine())
display(fwd.pivot(index="seq_len", columns="model", values="median_ms")[list(models)].round(2))
gen.round(1)
"""),
    code(r"""
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
for name, grp in fwd.groupby("model", sort=False):
    a.plot(grp.seq_len, grp.median_ms, "o-", label=name)
a.set(xlabel="sequence length (tokens)", ylabel="forward latency, median (ms)", title="next-token scores for one sequence")
a.legend()
order = gen["median tokens/s"].sort_values()
b.barh(order.index, order.values, color="tab:blue")
b.errorbar(order.values, range(len(order)), xerr=[order.values - gen.loc[order.index, "slowest round"],
           gen.loc[order.index, "fastest round"] - order.values], fmt="none", color="black", capsize=3)
b.set(xlabel="tokens/s, 16 new tokens (median and range of 5 rounds in turn)", title="greedy generation")
fig.suptitle("measured on: " + secbook.describe_machine(), fontsize=8)
plt.tight_layout(); plt.show()
"""),
    code(r"""
growth = {name: g.set_index("seq_len").median_ms for name, g in fwd.groupby("model", sort=False)}
say("From 10 to 256 tokens the forward time grew "
    + ", ".join(f"{times(v[256] / v[10])} for {k}" for k, v in growth.items()) + ".",
    zh="从 10 个词元到 256 个词元，前向时间增长为原来的："
       + "，".join(f"{k} {times_zh(v[256] / v[10])}" for k, v in growth.items()) + "。")
B, F, T = list(models)
say(f"In generation, {compare(speeds, B, F).words()}; {compare(speeds, F, T).words()}. "
    f"The fastest at the median was {gen['median tokens/s'].idxmax()}.",
    zh=f"生成时，{compare(speeds, B, F).words_zh()}；{compare(speeds, F, T).words_zh()}。"
       f"按中位数最快的是 {gen['median tokens/s'].idxmax()}。");
""", tags=("remove-input",)),
    md(r"""
How to read these numbers (the mechanisms below hold on any machine; the sizes printed above are this run's):

* The **buggy** forward pass runs all tokens as *independent one-step sequences*, side by side: one LSTM step
  over a batch, however long the input. It is cheap, and wrong.
* The **fixed** LSTM must walk the sequence one token at a time, because each step needs the previous state:
  its forward time grows with the length, and the steps cannot run in parallel.
* The **transformer** processes all positions of the prompt at once (matrix–matrix products), which is why
  transformers replaced recurrent networks for long inputs; its attention still grows with the length.
* In **generation** the buggy model "recomputes everything" for each new token — but that recomputation is
  the same one-step-over-a-batch as its forward pass, and at these lengths it costs about what one state-carrying
  step of the fixed LSTM costs. Both are dominated by the output layer (512 × 10 000 weights) and by per-call
  overhead. So the buggy model can be as fast as the fixed one, or faster, and still be useless: it never looked
  at the context. A benchmark measures speed, not correctness — which is why the checks came first.

## The same project with a real model

The source's project ends at "run inference with it". With a real model, inference is a loop: render the
conversation with the model's **chat template** (the special tokens that mark who speaks), run the whole prompt
through the model once (the **prefill**), then feed back one token at a time, reusing the **KV cache** of
everything before, until the model emits its end-of-turn token. `handson.reply` is that loop, written by hand in
a dozen lines; the model is SmolLM2-135M-Instruct {cite}`allal2025smollm2`, fetched from the package index as
llama.cpp's 4-bit Q4_1 file and converted back to fp32 (chapter 1): a real chat model, though not bit for bit
the original weights.
"""),
    code(r"""
import inspect
real, rtok = secbook.load("smollm2-135m-instruct")
print(inspect.getsource(handson.reply).split(chr(34) * 3)[-1])  # the loop, without its docstring
"""),
    md(r"""
A two-turn conversation: the second question only makes sense with the first turn in the history, which the chat
template puts back in front of it. Greedy decoding (always the most likely token) makes the replies reproducible.
"""),
    code(r"""
history = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
r1 = handson.reply(real, rtok, history, max_new_tokens=40)
history += [{"role": "assistant", "content": r1.text}, {"role": "user", "content": "And the capital of Italy?"}]
r2 = handson.reply(real, rtok, history, max_new_tokens=40)
for turn, r in zip(history[::2], (r1, r2)):
    print(f"user: {turn['content']}\nassistant: {r.text}\n")
print(f"second turn: {r2.prompt_tokens} prompt tokens; first token after {r2.ttft_s * 1e3:.0f} ms, "
      f"then {r2.tokens_per_s:.1f} tokens/s (measured on {secbook.describe_machine()})")
"""),
    md(r"""
Is the loop right? The check of this chapter again, before any timing: transformers' `generate`, with greedy
decoding, must produce exactly the same tokens. The build of this book fails if it does not.
"""),
    code(r"""
ids = rtok.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
ref = real.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)[0, ids.shape[1]:]
guard(ref.tolist() == r2.tokens, "the hand-written loop produces the same tokens as generate",
      f"{len(r2.tokens)} tokens by hand, {len(ref)} by generate")
print(f"the same {len(r2.tokens)} tokens as generate:", ref.tolist() == r2.tokens)
"""),
    summary([
        "A model that runs and returns the right shape can still compute the wrong thing: test what its output "
        "depends on (here, the context) before timing it.",
        "nn.LSTM reads [sequence, batch, features] unless batch_first=True; getting it wrong turns one sequence "
        "into a batch of one-token sequences, silently.",
        "An LSTM must walk its input one step at a time; a transformer processes the whole prompt at once and "
        "carries a KV cache while generating.",
        "Compare speeds measured in turn, and word the result from the rounds: a fast wrong model is not an "
        "optimization.",
        "The inference loop of a real chatbot is short: chat template, prefill, then one greedy token at a time "
        "with the KV cache until the end-of-turn token — the same tokens as generate.",
    ]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
Count the parameters of `SimpleLLM` by hand: embedding, LSTM (PyTorch's LSTM has four gates, each with input
weights, recurrent weights and *two* bias vectors), output layer. Check your total with
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
    exercise(2, r"""
Feed the buggy model a batch of **4** sequences of length 10, `torch.randint(0, 10000, (4, 10))`. What shape do
the logits have, and which tokens does row 2 of the output depend on? Predict first, then verify by changing
tokens and watching the output.
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
    exercise(3, r"""
Fix the model *without* `batch_first=True`: keep the buggy `SimpleLLM` (its LSTM stays `batch_first=False`) and
write a forward function that transposes the embeddings to `[sequence, batch, features]` and takes the last time
step correctly. Show that it gives the same logits as `FixedSimpleLLM` built with the same seed.
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
    exercise(4, r"""
Extend the forward timing to 1024 tokens for the fixed LSTM and the transformer (`handson.time_call` on
`handson.last_token_logits`). Which grows faster from 256 to 1024 tokens on this machine, and why would a GPU
widen the gap?
"""),
    solution(r"""
ms = {}
for name, m in {"fixed LSTM": fixed, "transformer": transformer}.items():
    ms[name] = {n: 1e3 * handson.time_call(lambda: handson.last_token_logits(m, torch.randint(0, 10000, (1, n))),
                                           warmup=1, repeats=3)["median_s"] for n in (256, 1024)}
    print(f"{name:>12}: 256 tokens {ms[name][256]:.0f} ms, 1024 tokens {ms[name][1024]:.0f} ms, "
          f"{times(ms[name][1024] / ms[name][256])}")
g = {k: v[1024] / v[256] for k, v in ms.items()}
say(f"Here the {max(g, key=g.get)}'s time grew more ({times(max(g.values()))} against {times(min(g.values()))}). "
    "The LSTM's work grows in proportion to the length, in 1024 dependent steps; the transformer's projections "
    "grow in proportion too, and its attention with the square of the length. On a GPU the transformer's prefill "
    "is a few large matrix products that fill the device, while each of the LSTM's steps is too small to use "
    "it — so the gap widens in the transformer's favour.",
    zh=f"这里 {max(g, key=g.get)} 的时间增长得更多（{times_zh(max(g.values()))}，而另一个是 "
       f"{times_zh(min(g.values()))}）。LSTM 的工作量与长度成正比，要分 1024 个相互依赖的步骤完成；transformer 的投影"
       "计算也与长度成正比，而它的注意力计算与长度的平方成正比。在 GPU 上，transformer 的预填充是几次能占满设备的大矩阵"
       "乘法，而 LSTM 的每一步都太小，用不满设备——所以差距会朝有利于 transformer 的方向拉大。");
"""),
    exercise(5, r"""
Make the chatbot remember a fact across turns: tell it your name in the first turn and ask for it in the second,
with `handson.reply`. Then drop the first turn from the history and ask again. What does the model see in each
case, and how many prompt tokens does each second turn cost?
"""),
    solution(r"""
turn1 = [{"role": "user", "content": "My name is Ada. Please remember it."}]
a1 = handson.reply(real, rtok, turn1, max_new_tokens=16)
with_history = turn1 + [{"role": "assistant", "content": a1.text}, {"role": "user", "content": "What is my name?"}]
without = [{"role": "user", "content": "What is my name?"}]
for label, msgs in (("with the first turn", with_history), ("without it", without)):
    r = handson.reply(real, rtok, msgs, max_new_tokens=16)
    print(f"{label}: {r.prompt_tokens} prompt tokens -> {r.text!r}")
say("The model has no memory of its own: it sees only the tokens of the prompt. The history is re-sent (and "
    "prefilled again) every turn, so each turn's prompt — and its time to first token — grows with the conversation.",
    zh="模型自己没有记忆：它只看到提示中的词元。每一轮都要重新发送历史（并再次预填充），所以每一轮的提示——以及它的"
       "首字延迟——都随对话变长而增长。");
"""),
]
