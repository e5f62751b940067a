"""Chapter 3.2 — Algorithm optimization: from HF generate() to a fast decoding loop of our own."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "03_2_algorithms"

CELLS = [
    md(r"""
# Algorithm optimization: from `generate()` to a fast decoding loop

The source's second family of techniques changes *how* the computation runs, not *what* it computes. This chapter
starts from Hugging Face `model.generate()` and changes one thing at a time: the KV cache, the attention kernel,
batching, a static cache with `torch.compile`, a decoding loop of our own, and speculative decoding. Each step is
checked for the same greedy tokens and timed against the step before it. The chapter ends with the *optimization
ladder*, every step measured side by side. Section 3.2.1 then opens the fastest rung, a decode step written in
C++.
"""),
    opening(["explain why a KV cache makes each decode step cost the same, and compute its size",
             "tell throughput from latency when requests are batched, and static from continuous batching",
             "write a decoding loop around a static cache and check it gives `generate()`'s tokens",
             "measure speculative decoding's acceptance rate α on real prompts and compare the tokens per call "
             "with the formula",
             "read an optimization ladder: what each rung buys, and what it costs in output quality"],
            ["chapter 1 (prefill and decode, TTFT, TPOT, timing honestly)", "chapter 2 (the optimization pipeline)",
             "section 3.1.1 (weight quantization)"], 45),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import os
import numpy as np, torch, pandas as pd, matplotlib.pyplot as plt
from secbook import attention, batching, kvcache, generate, speculative, kernels, ladder as L, pretrained, widgets
from secbook.claims import say, guard, compare, times, times_zh
from dataclasses import replace  # a comparison relabelled in Chinese, for say(..., zh=...)
from secbook.measure import prompt_ids, tok_s_in_turn, token_agreement, load_results, describe_machine
pd.set_option("display.width", 140); pd.set_option("display.precision", 3)
print("measured on:", machine)
"""),
    md(r"""
## The baseline and the two models

Two models serve this chapter. The book's **tiny** model (5.8 M parameters, trained here) runs a step in
milliseconds, so experiments with many repeats stay cheap. The **real** model, SmolLM2-135M-Instruct, is a chat
model that answers questions; the copy used here comes from llama.cpp's Q4_1 file (printed below). Greedy
decoding picks the most likely token at every step, so its output is reproducible: these tokens are the
reference every later step must reproduce.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
model, tok = secbook.load("tiny")
ids = prompt_ids(tok, 32)
reference = generate.hf_generate(model, ids, 64)
print(reference[0, 32:].tolist())
"""),
    code(r"""
real, rtok = secbook.load(pretrained.NAME)
print(pretrained.PROVENANCE)
chat, chat_label = L.ladder_prompt(rtok)  # one user turn in the chat template, ready for the reply
N_REAL = 24
real_ref = generate.hf_generate(real, chat, N_REAL)
print(chat_label, "->", repr(rtok.decode(real_ref[0, chat.shape[1]:])))
"""),
    md(r"""
## The KV cache

To predict the next token the model attends to the keys and values of every earlier token. Without a cache it
recomputes them at every step, so step $t$ runs the whole prefix of $t$ tokens through the network and a whole
generation costs $O(n^2)$. With the cache {cite}`pope2022efficiently` each step runs one token and appends one key
and one value per layer. Each step of the tiny model, timed with and without it:
"""),
    code(r"""
steps = kvcache.cache_on_off(model, prompt_ids(tok, 32), new_tokens=96)
ax = steps.plot(x="position", y=["no_cache_ms", "with_cache_ms"], figsize=(6.5, 3))
ax.set(ylabel="ms per decode step", title="tiny model: the cost of one step by position"); plt.show()
"""),
    code(r"""
first, last = steps.iloc[:10], steps.iloc[-10:]
grow = lambda col: last[col].median() / first[col].median()
say(f"Without the cache the {len(steps)} steps took {steps.no_cache_ms.sum():.0f} ms in all, with it "
    f"{steps.with_cache_ms.sum():.0f} ms. From the first ten steps to the last ten, a step without the cache "
    f"became {times(grow('no_cache_ms'))} as slow, one with the cache {times(grow('with_cache_ms'))}"
    + ("." if grow("with_cache_ms") < grow("no_cache_ms") else
       " — not the flat cost the cache should give: the steps were disturbed by other work on the machine (each "
       "step is timed once); run the cell again."),
    zh=f"不用缓存时，这 {len(steps)} 步共用了 {steps.no_cache_ms.sum():.0f} ms，用缓存时共用了 "
       f"{steps.with_cache_ms.sum():.0f} ms。从前十步到最后十步，不用缓存的一步所用时间变为原来的 "
       f"{times_zh(grow('no_cache_ms'))}，用缓存的一步变为 {times_zh(grow('with_cache_ms'))}"
       + ("。" if grow("with_cache_ms") < grow("no_cache_ms") else
          "——而不是缓存本应带来的恒定代价：这些步受到了机器上其他工作的干扰（每一步只计时一次）；请再运行一次这个单元格。"));
""", tags=("remove-input",)),
    md(r"""
The price is memory. For one sequence the cache holds a key and a value vector per layer, per key/value head and
per position:

$$\text{bytes} = \text{layers} \times 2 \times \text{kv\_heads} \times \text{head\_dim} \times \text{positions}
\times \text{bytes per element}.$$

The formula against the tensors Hugging Face actually keeps after a 100-token prompt:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
for name, m in (("tiny", model), (pretrained.NAME, real)):
    formula = kvcache.kv_cache_bytes(m.config, 100)
    measured = kvcache.measured_kv_bytes(m, prompt_ids(tok, 100))
    print(f"{name:>22}: formula {formula:,} bytes, measured {measured:,} bytes, equal: {formula == measured}")
"""),
    md(r"""
**Grouped-query attention** (GQA, {cite}`ainslie2023gqa`) lets several query heads share one key/value head, which
divides the cache by `heads / kv_heads`. Every model below uses it (sizes in bf16 at 4,096 positions, from the
configurations alone):
"""),
    code(r"""
from secbook.models import REPLICAS, replica_config
configs = {"tiny": model.config, pretrained.NAME: real.config, **{r: replica_config(r) for r in REPLICAS}}
kvcache.cache_table(configs, positions=4096, dtype=torch.bfloat16).round(1)
"""),
    md(r"""
## Attention implementations

`eager` attention computes $\mathrm{softmax}(QK^\top/\sqrt d)\,V$ as separate operations and stores the
$T\times T$ score matrix; `sdpa` calls PyTorch's `scaled_dot_product_attention`, which dispatches to a fused
kernel — FlashAttention {cite}`dao2022flashattention` on recent GPUs, a tiled kernel on a CPU — that never stores
the scores. Same function up to rounding; the difference grows with the context, where the $T^2$ scores dominate.
One prefill of the tiny model per context, both implementations timed in turn, three rounds:
"""),
    code(r"""
att = pd.concat([attention.compare(model, contexts=(128, 512, 1024), repeats=1).assign(round=r) for r in range(3)])
med = att.groupby(["context", "attention"]).ms.median().unstack()
ax = med.plot(marker="o", figsize=(5.5, 3), logy=True)
ax.set(ylabel="prefill ms (median of 3)", title="tiny model: attention implementation vs context"); plt.show()
"""),
    code(r"""
rounds = {f"{impl} at {n}": g.sort_values("round").ms.tolist() for (impl, n), g in att.groupby(["attention", "context"])}
words = [compare(rounds, f"sdpa at {n}", f"eager at {n}", higher_is_better=False).words() for n in (128, 1024)]
words_zh = [replace(compare(rounds, f"sdpa at {n}", f"eager at {n}", higher_is_better=False),
                    a=f"sdpa（上下文 {n}）", b=f"eager（上下文 {n}）").words_zh() for n in (128, 1024)]
say(f"Prefill time: {words[0]}; {words[1]}. The largest logit difference between the two was "
    f"{att.max_abs_diff_vs_first.max():.1e}: the same function, summed in another order.",
    zh=f"预填充时间：{words_zh[0]}；{words_zh[1]}。两者之间最大的 logit 差异为 "
       f"{att.max_abs_diff_vs_first.max():.1e}：同一个函数，只是求和的顺序不同。");
""", tags=("remove-input",)),
    md(r"""
## Batching: throughput against latency

A decode step at batch 1 reads every weight to produce one token; at batch $B$ the same read produces $B$ tokens,
so throughput grows while each request waits a little longer per step. Prompts of different lengths must be
padded on the **left**, with an attention mask hiding the pads, or the batched output differs from each prompt run
alone:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
prompts = ["def f(x):\n    return", "import os\nimport sys\n\nclass Reader:\n    def", "x ="]
print("same tokens batched as alone:", batching.check_left_padding(model, tok, prompts, new_tokens=12))
"""),
    code(r"""
sweep = batching.batch_sweep(model, tok, batch_sizes=(1, 4, 16), new_tokens=16, repeats=2)
fig, ax = plt.subplots(figsize=(5.5, 3))
ax.plot(sweep.ms_per_token_per_request, sweep.tokens_per_s, marker="o")
for _, r in sweep.iterrows():
    ax.annotate(f" B={r['batch']:.0f}", (r.ms_per_token_per_request, r.tokens_per_s))
ax.set(xlabel="ms per token, per request (latency)", ylabel="tokens/s (throughput)", title="tiny model, HF generate")
plt.show()
b1, b16 = sweep.iloc[0], sweep.iloc[-1]
wait = b16.ms_per_token_per_request / b1.ms_per_token_per_request
say(f"Batch 16 produced {times(b16.tokens_per_s / b1.tokens_per_s)} the tokens per second of batch 1, "
    + (f"while each request waited {times(wait)} as long per token." if wait >= 1 else
       f"and each request even waited less per token ({times(wait)}): batch 1 was timed while the machine was busier "
       "(each size is timed on its own, not in turn); a batch can never make a single request's steps cheaper."),
    zh=f"批大小 16 每秒生成的词元数是批大小 1 的 {times_zh(b16.tokens_per_s / b1.tokens_per_s)}，"
       + (f"而每个请求每个词元的等待时间变为原来的 {times_zh(wait)}。" if wait >= 1 else
          f"而且每个请求每个词元的等待甚至更短（{times_zh(wait)}）：批大小 1 是在机器更忙的时候计时的（每种批大小"
          "单独计时，而不是轮流计时）；成批处理绝不可能让单个请求的每一步变得更便宜。"));
"""),
    md(r"""
A server does not receive its requests in neat batches. **Static batching** admits a batch and waits for its
longest request before admitting the next, so finished requests leave their slots idle. **Continuous**
(in-flight) batching {cite}`yu2022orca` refills a slot as soon as its request finishes (chapter 6.1 runs it in a
real server). A simulation of one random workload, where a step costs 40 ms plus 2 ms per running sequence:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
work = batching.workload(64, seed=0)
sim = pd.DataFrame([batching.simulate(work, p, max_batch=b) for b in (4, 8) for p in ("static", "continuous")])
print(sim[["policy", "max_batch", "total_steps", "slot_utilisation", "mean_latency_steps"]].round(2).to_string(index=False))
"""),
    md(r"""
## A static cache and `torch.compile`

`torch.compile` {cite}`ansel2024pytorch2` traces the model into a graph and generates fused kernels for it; on a
GPU, `mode="reduce-overhead"` also records the whole step as a CUDA graph {cite}`nvidia_cuda_graphs` and replays
it with one launch. Both need **fixed shapes**: a cache that grows by one position per token would be compiled
again at every step, so the cache is allocated once for the maximum length — a *static* cache
(`cache_implementation="static"` in `generate`). Compiling takes tens of seconds on a CPU, too long to repeat on
this page, so the compiled rungs come from the recorded ladder (the end of this chapter):
"""),
    code(r"""
rec = load_results("generate_ladder")
rr = lambda rung, base: L.recorded_ratio(rec, pretrained.NAME, rung, base)
(c_ours, lab), (c_hf, _) = rr("our loop fp32 + compile", "our loop fp32, fused weights"), \
    rr("HF generate fp32 static cache + compile", "HF generate fp32 (baseline)")
row = rec[(rec.model == pretrained.NAME) & (rec.rung == "our loop fp32 + compile")].iloc[0]
say(f"Recorded on {lab['machine']} ({lab['date']}), on {pretrained.NAME}: compiling our loop made it "
    f"{times(c_ours)} as fast as the same loop uncompiled, with token agreement {row.token_agreement:.2f} with HF `generate`; its first call, compilation included, "
    f"took {row.first_call_s:.0f} s. HF `generate` with a static cache and compilation ran at {times(c_hf)} its "
    f"eager speed.",
    zh=f"记录于 {lab['machine']}（{lab['date']}），模型为 {pretrained.NAME}：编译使我们的循环的速度达到同一循环未编译时的 "
       f"{times_zh(c_ours)}，与 HF `generate` 的词元一致率为 {row.token_agreement:.2f}；它的第一次调用（包括编译）用了 "
       f"{row.first_call_s:.0f} s。使用静态缓存并编译的 HF `generate`，速度是它以即时执行 (eager) 模式运行时的 "
       f"{times_zh(c_hf)}。");
""", tags=("remove-input",)),
    md(r"""
## A decoding loop of our own

`generate.FastGenerator` does what gpt-fast {cite}`gptfast2023` does: it allocates the cache once, runs the prompt
(the prefill), then loops a single-token step that writes one key and one value per layer at `input_pos` and
attends over the whole cache, with a mask hiding the positions not yet written — no logits processors, no
stopping criteria, no mask rebuilt per step. The step is `secbook.decoder`: a few dozen lines over the model's
own weights, with what differs between architecture families written as data. By default the loop **fuses** the
projections that read the same input (q, k, v into one matrix; gate and up into another) and keeps them
transposed (section 3.2.1 shows why layout matters); `fuse=False` calls the model's own modules. Greedy output
must be `generate()`'s, token for token:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
fast = generate.FastGenerator(model, max_len=96)
unfused = generate.FastGenerator(model, max_len=96, fuse=False)
print("fused weights identical to model.generate():", torch.equal(fast.generate(ids, 64), reference))
print("module calls identical to model.generate(): ", torch.equal(unfused.generate(ids, 64), reference))
"""),
    md(r"""
The same check on the real model, for the lossless loops that are cheap enough to build here: our loop with
module calls, with fused weights, and the whole step in C++ on the model's fp32 weights (section 3.2.1). The
compiled loop's tokens are checked when the ladder is recorded (its `token_agreement`).
"""),
    code(r"""
n_chat = chat.shape[1] + N_REAL
loops = {"our loop, module calls": generate.FastGenerator(real, n_chat, fuse=False),
         "our loop, fused weights": generate.FastGenerator(real, n_chat)}
if kernels.available():
    loops["whole step in C++, fp32"] = generate.FastGenerator(real, n_chat, cpp=True)
else:
    print("the C++ step cannot be built here:", kernels.unavailable_reason())
for name, g in loops.items():
    same = torch.equal(g.generate(chat, N_REAL), real_ref)
    print(f"{name:>26}: identical to HF generate: {same}")
    guard(same, f"{name} gives HF generate's greedy tokens on {pretrained.NAME}")
"""),
    md(r"""
How much faster is our loop? HF `generate` and our loop with fused weights, timed in turn on the real model (new
tokens ÷ the whole call, prompt included):
"""),
    code(r"""
speeds = tok_s_in_turn({"HF generate": lambda x, n: generate.hf_generate(real, x, n),
                        "our loop, fused weights": loops["our loop, fused weights"].generate},
                       chat, N_REAL, rounds=3, expect=real_ref)
fig, ax = plt.subplots(figsize=(6, 1.6))
for i, (k, v) in enumerate(speeds.items()):
    ax.plot(v, [i] * len(v), "o", alpha=0.7)
ax.set_yticks(range(len(speeds)), list(speeds)); ax.set_ylim(-0.6, len(speeds) - 0.4)
ax.set(xlabel="tokens/s, one dot per round", xlim=(0, None)); ax.set_title(f"{pretrained.NAME}, in turn", fontsize=10)
plt.show()
"""),
    code(r"""
c_fused = compare(speeds, "our loop, fused weights", "HF generate")
c_fused_zh = replace(c_fused, a="使用融合权重的我们的循环", b="HF generate")
say(f"Timed in turn, {c_fused.words()}. "
    + L.versus_record(rec, pretrained.NAME, "our loop fp32, fused weights", "HF generate fp32 (baseline)", c_fused),
    zh=f"轮流计时：{c_fused_zh.words_zh()}。"
       + L.versus_record_zh(rec, pretrained.NAME, "our loop fp32, fused weights", "HF generate fp32 (baseline)", c_fused));
""", tags=("remove-input",)),
    md(r"""
### Which models the loop runs

The decoder description covers nine architecture families. Each is checked in the build on a tiny random-weight
model of its kind (two layers, made from transformers' own configuration class): the largest logit difference
from HF's forward, and whether our loop, the C++ step, and our loop on int8 (RTN) and 2:4-pruned weights give HF
`generate`'s greedy tokens (8 of them). The compiled loop is left out to keep the build short
(`python -m secbook.families` adds it).
"""),
    code(r"""
from secbook.families import support_table
table = support_table(new_tokens=8, compile=False)
refused = lambda v: isinstance(v, str) and v.startswith("no: ")
display(table.map(lambda v: "no (see below)" if refused(v) else v).style.format({"max_logit_error": "{:.1e}"}))
for col in table.columns:
    why = table[col][table[col].map(refused)]
    if len(why):
        print(f"{col} = no for {', '.join(why.index)}: {why.iloc[0][4:].split(', not model_type')[0]}")
"""),
    md(r"""
And end to end on the shapes of two popular small models, Qwen3-0.6B {cite}`qwen3config` and Gemma-3-270M
{cite}`gemma3config` (random weights, first two layers, the tiny model's tokenizer):
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
for name in ("replica:qwen3-0.6b", "replica:gemma-3-270m"):
    rep, _ = secbook.load(name, num_hidden_layers=2)
    x = prompt_ids(tok, 16)
    same = torch.equal(generate.FastGenerator(rep, 24).generate(x, 8), generate.hf_generate(rep, x, 8))
    print(f"{name}: {rep.config.model_type}, our loop's 8 greedy tokens identical to HF generate: {same}")
    guard(same, f"our loop gives HF generate's tokens on {name}")
    del rep
"""),
    md(r"""
## Speculative decoding and prompt lookup

At batch 1 a target step reads all the weights to produce one token, and checking $\gamma+1$ positions in one
pass costs little more. A cheap **draft** with the same tokenizer proposes $\gamma$ tokens; the target verifies
them in one pass, keeps the longest prefix it agrees with and adds its own next token
{cite}`leviathan2023fast,chen2023accelerating`, so greedy output is exactly the target's. If each draft is accepted
with probability $\alpha$, a target call yields on average

$$\frac{1-\alpha^{\gamma+1}}{1-\alpha}\ \text{tokens}.$$

A run's **acceptance rate** is $\alpha$ = accepted ÷ *judged* drafts, where a call judges its drafts up to and
including the first rejection; the drafts after it are discarded unseen, and counting them as rejected would bias
$\alpha$ low. **Prompt lookup** {cite}`saxena2023promptlookup` needs no draft model: it proposes the tokens that
followed the last occurrence of the current n-gram in the context. transformers has both (`assistant_model=`,
`prompt_lookup_num_tokens=`). On the tiny model, with its distilled student as the draft (or, where no student has
been trained, the tiny model cut to its first two layers: the printed `draft:` line says which), all four give the
reference tokens:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
draft, draft_name = L.draft_for(model)
print("draft:", draft_name)
print("ours, draft model:  ", torch.equal(speculative.speculative_generate(model, draft, ids, 64).ids, reference))
print("ours, prompt lookup:", torch.equal(speculative.speculative_generate(model, "lookup", ids, 64).ids, reference))
print("HF assistant_model: ", torch.equal(speculative.hf_assisted(model, draft, ids, 64), reference))
print("HF prompt lookup:   ", torch.equal(speculative.hf_prompt_lookup(model, ids, 64), reference))
"""),
    md(r"""
Acceptance depends on the text. Three chat turns to the real model: rewrite a function with type hints (the reply
can copy the code), summarise a paragraph (it can copy phrases), and free chat (nothing to copy). Two drafts:
prompt lookup, and the target's own int8 copy (torch.ao dynamic int8: a quarter of the weight bytes, and nearly
always the same next token). Each reply stops at the end-of-sequence token, as a chat reply does, and must be the
target's own greedy reply:
"""),
    code(r"""
GAMMA = 4
int8_self, int8_label = L.draft_for(real, "int8-self")
acc = speculative.task_acceptance(real, rtok, {"prompt lookup": "lookup", "int8 self-draft": int8_self},
                                  speculative.REAL_TASKS, gamma=GAMMA, max_new_tokens=32)
guard(acc.identical.all(), "speculative decoding and prompt lookup give the target's own greedy replies")
acc[["task", "draft", "new_tokens", "target_calls", "judged", "accepted", "acceptance_rate", "tokens_per_call",
     "expected_tokens_per_call"]].round(2)
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(6, 3.4))
a = np.linspace(0, 0.99, 100)
ax.plot(a, [speculative.expected_tokens_per_call(x, GAMMA) for x in a], color="grey",
        label=f"(1-α^(γ+1))/(1-α), γ={GAMMA}")
for (draft_name, d), mk, dy in zip(acc.groupby("draft"), "os", (8, -12)):
    ax.scatter(d.acceptance_rate, d.tokens_per_call, marker=mk, s=50, label=f"measured: {draft_name}")
    for r in d.itertuples():
        ax.annotate(r.task, (r.acceptance_rate, r.tokens_per_call), xytext=(-4, dy), textcoords="offset points",
                    ha="right", fontsize=8)
ax.set(xlabel="acceptance rate α (accepted ÷ judged drafts)", ylabel="tokens per target call")
ax.set_title(f"{pretrained.NAME}: measured vs the formula", fontsize=10); ax.legend(fontsize=8); plt.show()
"""),
    code(r"""
lk = acc[acc.draft == "prompt lookup"].set_index("task")
i8 = acc[acc.draft == "int8 self-draft"].set_index("task")
gap = (acc.tokens_per_call / acc.expected_tokens_per_call - 1).abs().max()
say(f"Prompt lookup's α was highest on '{lk.acceptance_rate.idxmax()}' ({lk.acceptance_rate.max():.2f}, "
    f"{lk.tokens_per_call.max():.2f} tokens per call) and lowest on '{lk.acceptance_rate.idxmin()}' "
    f"({lk.acceptance_rate.min():.2f}); the int8 self-draft's α ranged from {i8.acceptance_rate.min():.2f} to "
    f"{i8.acceptance_rate.max():.2f}. The measured tokens per call were within {gap:.0%} of the formula at the "
    "measured α in every row"
    + (": the formula describes these runs well." if gap < 0.15 else
       " — the formula assumes every draft is accepted independently with the same probability, and real text "
       "is not like that: acceptances come in runs (a copied passage is accepted draft after draft) and a "
       "reply of a few dozen tokens gives few calls to average over."),
    zh=f"提示查找的 α 在“{lk.acceptance_rate.idxmax()}”上最高（{lk.acceptance_rate.max():.2f}，每次调用 "
       f"{lk.tokens_per_call.max():.2f} 个词元），在“{lk.acceptance_rate.idxmin()}”上最低"
       f"（{lk.acceptance_rate.min():.2f}）；int8 自草稿的 α 在 {i8.acceptance_rate.min():.2f} 到 "
       f"{i8.acceptance_rate.max():.2f} 之间。在每一行中，实测的每次调用词元数与把实测 α 代入公式得到的值相差都在 "
       f"{gap:.0%} 以内"
       + ("：公式很好地描述了这些运行。" if gap < 0.15 else
          "——公式假定每个草稿词元都以相同的概率独立地被接受，而真实文本并非如此：接受是成串出现的（一段照抄的文字会"
          "一个草稿接一个草稿地被接受），而且几十个词元的回复只能提供很少几次调用来求平均。"));
""", tags=("remove-input",)),
    md(r"""
Whether this buys speed depends on two more costs: making the drafts (free for prompt lookup; the int8 copy's own
steps for the self-draft) and verifying $\gamma+1$ positions instead of one. Speculation's own gain is measured
against **the same loop without speculation**: our fused loop, timed in turn with the two speculative versions of
it on the rewrite task:
"""),
    code(r"""
rw = speculative.task_ids(rtok, speculative.REAL_TASKS["rewrite"])
N_SPEC = 20
own = generate.FastGenerator(real, rw.shape[1] + N_SPEC)
spec_loops = {name: speculative.SpeculativeDecoder(real, d, gamma=GAMMA, max_len=rw.shape[1] + N_SPEC)
              for name, d in (("prompt lookup", "lookup"), ("int8 self-draft", int8_self))}
spec_speeds = tok_s_in_turn({"our loop": own.generate,
                             **{k: (lambda x, n, s=s: s.generate(x, n).ids) for k, s in spec_loops.items()}},
                            rw, N_SPEC, rounds=3, expect=own.generate(rw, N_SPEC))
verify = speculative.verify_cost(real, gamma=GAMMA, repeats=3)
pd.DataFrame(spec_speeds).describe().loc[["50%", "min", "max"]].rename(index={"50%": "median"}).round(1)
"""),
    code(r"""
vs = {k: compare(spec_speeds, k, "our loop") for k in spec_loops}
vs_zh = {k: replace(c, a={"prompt lookup": "提示查找", "int8 self-draft": "int8 自草稿"}[k], b="我们的循环")
         for k, c in vs.items()}
say(f"On the rewrite task (the same tokens as our loop, checked): {vs['prompt lookup'].words()}; "
    f"{vs['int8 self-draft'].words()}. One verification pass over {GAMMA + 1} positions cost "
    f"{times(verify)} a single-position step, so a call must yield more than that many tokens to pay for itself "
    "with a free draft; a draft model's own steps come on top.",
    zh=f"在重写任务上（生成的词元与我们的循环相同，已检验）：{vs_zh['prompt lookup'].words_zh()}；"
       f"{vs_zh['int8 self-draft'].words_zh()}。一次验证 {GAMMA + 1} 个位置的前向计算，代价是只处理一个位置的一步的 "
       f"{times_zh(verify)}，所以在草稿不花代价时，一次调用必须产生多于这个数目的词元才划算；草稿模型自己的解码步还要另算。");
""", tags=("remove-input",)),
    md(r"""
## The optimization ladder

`python -m secbook bench --suite generate --model NAME` measures every rung for one model in one run (batch 1,
greedy, 64 new tokens; the chat model gets one chat turn as its prompt): tokens/s, the speed-up over HF
`generate`, the agreement of its tokens with HF's, the memory-bandwidth utilisation (MBU) and the tiny model's
perplexity change under the same weight transform. The figure shows the real model's recorded run, labelled with
its machine and date. Blue and green rungs must agree on every token; orange rungs change the weights, and on a
trained model one changed token changes the rest of the reply, so their agreement falls fast even where
perplexity barely moves.
"""),
    code(r"""
L.plot_ladder(rec, models=[pretrained.NAME]); plt.show()
"""),
    md(r"""
Every recorded row, for the three models (the tiny model, the 135M replica with random weights, the real model):
"""),
    code(r"""
cols = ["model", "rung", "tok_s", "speedup", "token_agreement", "tiny_ppl_change", "mbu", "first_call_s",
        "speedup_vs_own_loop", "timestamp"]
with pd.option_context("display.max_rows", 200):
    display(L.with_own_loop_speedup(rec)[cols].round(3))
""", tags=("hide-output",)),
    code(r"""
lines, lines_zh = L.ladder_summary(rec).splitlines(), L.ladder_summary_zh(rec).splitlines()
say("Computed from the recorded rows (the best lossless loop, the best rung within a 1 % perplexity budget, and "
    "each speculative rung against HF `generate` and against its own loop without speculation):\n\n"
    + "\n".join(("- **" + l + "**") if not l.startswith("  ") else "    - " + l.strip() for l in lines),
    zh="由记录下来的各行计算得出（最快的无损循环、困惑度变化在 1 % 预算以内的最快梯级，以及每个推测梯级相对 HF "
       "`generate` 和相对不带推测的自身循环的加速比）：\n\n"
       + "\n".join(("- **" + l + "**") if not l.startswith("  ") else "    - " + l.strip() for l in lines_zh));
""", tags=("remove-input",)),
    md(r"""
Reading the ladder. At batch 1 a 135M-parameter model is limited by reading its weights: every rung that reads
fewer bytes per token (int8), or loses less time around the reading (our loop, the C++ step), moves it. The tiny
model reads so few bytes that fixed costs per step dominate. Speculation is worth what it adds over its own loop;
its gain over HF `generate` includes the faster loop underneath.

On a GPU the suite runs the 1B replica (Llama-3.2-1B's shapes) with CUDA graphs. Where this page runs on a GPU
the cell below measures the baseline and two compiled rungs; elsewhere it summarises the ladder recorded on a GPU
(`bash tools/gpu_ladder.sh`):
"""),
    code(r"""
from types import SimpleNamespace
from secbook.paths import RESULTS_DIR
if torch.cuda.is_available():
    args = SimpleNamespace(model="replica:llama-3.2-1b", device="cuda", prompt_len=32, new_tokens=64, repeats=3)
    quick = [L.LADDER[0]] + [r for r in L.LADDER if r.name in L.GPU_QUICK_RUNGS]
    gpu = L.run_generate_suite(args, rungs=quick, save=False)
    gpu_label = f"measured now on {torch.cuda.get_device_name(0)}"
    gpu_label_zh = f"此刻在 {torch.cuda.get_device_name(0)} 上测得"
elif (RESULTS_DIR / "generate_ladder_cuda.csv").exists():
    gpu = load_results("generate_ladder_cuda")
    gpu_label = f"recorded on {gpu.gpu.iloc[0]} ({gpu.timestamp.iloc[0][:10]}, torch {gpu.torch.iloc[0]})"
    gpu_label_zh = f"记录于 {gpu.gpu.iloc[0]}（{gpu.timestamp.iloc[0][:10]}，torch {gpu.torch.iloc[0]}）"
else:
    gpu = None
    say("No CUDA GPU here, and no GPU ladder recorded (bash tools/gpu_ladder.sh on a GPU machine makes one).",
        zh="这里没有 CUDA GPU，也没有记录下来的 GPU 阶梯（在一台 GPU 机器上运行 bash tools/gpu_ladder.sh 即可生成）。")
if gpu is not None:
    say(f"The 1B replica's ladder, {gpu_label}:\n\n" + "\n".join("- " + l.strip() for l in
                                                                   L.ladder_summary(gpu).splitlines()[1:]),
        zh=f"1B 复刻模型的阶梯，{gpu_label_zh}：\n\n" + "\n".join("- " + l.strip() for l in
                                                             L.ladder_summary_zh(gpu).splitlines()[1:]))
"""),
    md(r"""
On a GPU, eager decoding launches hundreds of small kernels per token and the GPU waits for Python between them;
compiled with CUDA graphs, the step is one replay, and the weights stream at a large share of the memory's speed.

## Try it

Batch size, context length, draft length γ (with an assumed acceptance rate α) and the attention implementation:
the tiny model's KV-cache size, one timed prefill, the speed-up the speculative formula predicts, and the
batching simulation at that many slots. (In the static book the panel is inert; the line under it is one update,
run when the page was built.)
"""),
    code(r"""
panel = widgets.generation_widget(batch=4, context=256, gamma=4, attention="sdpa")
display(panel)
print(widgets.generation_update(8, 512, 4, "eager", alpha=0.7, model=model))
"""),
    summary(["A KV cache turns each decode step into one token's work plus attention over the cache; its size is "
             "layers × 2 × kv_heads × head_dim × positions × bytes, and grouped-query attention divides it.",
             "Batching trades per-request latency for throughput; continuous batching refills a slot as soon as "
             "its request ends, where static batching leaves it idle.",
             "A decoding loop of our own around a static cache — prefill once, then a single-token step — gives "
             "exactly `generate()`'s greedy tokens with less work around each step; fused projections and "
             "compilation cut that work further.",
             "Speculative decoding and prompt lookup keep the target's output exactly; α counts accepted drafts "
             "over judged drafts, and their speed is judged against the same loop without speculation.",
             "The ladder compares every rung in one run on one machine: lossless rungs must agree on every token, "
             "and the others report their agreement and perplexity cost beside their speed."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
**One greedy decode step with a KV cache.** Write `step(model, token, past)` that runs the model on the single
`token` ([1, 1]) with the cache `past` and returns the next greedy token ([1, 1]) and the updated cache. The check
runs it for 12 steps against `model.generate`.
"""),
    code(r"""
def step(model, token, past):
    # your code here: one forward pass on `token` with `past`; return (next_token [1, 1], new_past)
    raise NotImplementedError
"""),
    solution(r"""
from secbook import exercises

def step(model, token, past):
    with torch.no_grad():
        out = model(input_ids=token, past_key_values=past, use_cache=True)
    return out.logits[:, -1:].argmax(-1), out.past_key_values

exercises.check_greedy_step(step)
"""),
    exercise(2, r"""
**Cache size.** SmolLM2-135M has 30 layers, 9 query heads, 3 key/value heads and head_dim 64. How many MB
(10⁶ bytes) does its KV cache take for 2,048 positions in bf16, and how much would it take without GQA? Check with
`exercises.check_kv_cache_mb(mb)` and against `kvcache.kv_cache_bytes(real.config, 2048, dtype=torch.bfloat16)`.
"""),
    solution(r"""
from secbook import exercises
mb = 30 * 2 * 3 * 64 * 2048 * 2 / 1e6          # layers x (k, v) x kv_heads x head_dim x positions x 2 bytes
exercises.check_kv_cache_mb(mb)
print(f"formula by hand {mb:.1f} MB; secbook's {kvcache.kv_cache_bytes(real.config, 2048, dtype=torch.bfloat16) / 1e6:.1f} MB; "
      f"without GQA (9 KV heads) {mb * 9 / 3:.1f} MB")
"""),
    exercise(3, r"""
**When does speculation pay?** A draft step costs a fraction $c$ of a target step. With $\gamma$ drafts per call a
round costs $\gamma c + 1$ target steps and yields $(1-\alpha^{\gamma+1})/(1-\alpha)$ tokens. For $\alpha=0.6$ and
$c=0.25$, which $\gamma$ in 1..8 is best, and what speed-up over the target alone does it predict? What changes
for prompt lookup ($c = 0$)?
"""),
    solution(r"""
alpha, c = 0.6, 0.25
gain = lambda g, c: speculative.expected_tokens_per_call(alpha, g) / (g * c + 1)
best = max(range(1, 9), key=lambda g: gain(g, c))
print(f"c = {c}: best gamma {best}, predicted speed-up {gain(best, c):.2f}x")
print(f"c = 0 (prompt lookup): gamma 1..8 give " + ", ".join(f"{gain(g, 0):.2f}x" for g in range(1, 9)))
say(f"With free drafts a longer gamma never hurts in this model of the cost, and the gain approaches 1/(1-alpha) = "
    f"{1 / (1 - alpha):.2f}x; in practice verifying more positions costs a little more (verify_cost), which caps gamma.",
    zh=f"草稿不花代价时，在这个代价模型中更长的 gamma 永远不会有害，收益趋近于 1/(1-alpha) = {1 / (1 - alpha):.2f} 倍；"
       "实际上验证更多的位置要多花一点代价（verify_cost），这限制了 gamma 的取值。")
"""),
    exercise(4, r"""
**Static batching's idle slots.** In the simulation, what fraction of slot-steps does static batching leave idle
at `max_batch=8`, and why does continuous batching not suffer from it?
"""),
    solution(r"""
s8 = sim[(sim.max_batch == 8)].set_index("policy")
print(f"idle slot-steps at max_batch=8: static {1 - s8.slot_utilisation['static']:.0%}, "
      f"continuous {1 - s8.slot_utilisation['continuous']:.0%}")
say("Static batching keeps a batch until its longest request ends: the slots of requests that finished early stay "
    "empty. Continuous batching admits a waiting request into a slot at the next step after one finishes, so slots "
    "are idle only when no request is waiting.",
    zh="静态批处理要等一批中最长的请求结束才放走这一批：提前完成的请求的槽位一直空着。连续批处理在一个请求完成后的下一步"
       "就把一个等待中的请求接纳进这个槽位，所以只有在没有请求等待时槽位才会空闲。")
"""),
    exercise(5, r"""
**Where prompt lookup wins.** From the acceptance table above, on which task did prompt lookup yield the most
tokens per call, and why there? Would you expect it to help a model answering questions about a long document?
"""),
    solution(r"""
best = lk.tokens_per_call.idxmax()
print(f"Most tokens per call with prompt lookup: '{best}' ({lk.tokens_per_call[best]:.2f}, alpha "
      f"{lk.acceptance_rate[best]:.2f}); fewest: '{lk.tokens_per_call.idxmin()}' ({lk.tokens_per_call.min():.2f}).")
say("Prompt lookup can only propose text that already occurred in the context. A reply that repeats the prompt - "
    "code rewritten with small changes, a summary quoting phrases - offers long matching n-grams; free chat offers "
    "almost none. Questions about a long document (retrieval-augmented answers, quoting) are the good case: the "
    "answer copies names and phrases from a long context, at no cost for a draft model.",
    zh="提示查找只能提出上下文中已经出现过的文本。重复提示内容的回复——稍作修改后重写的代码、引用原文短语的摘要——能提供"
       "很长的匹配 n-gram；自由聊天则几乎没有。关于长文档的问题（检索增强的回答、引用原文）正是适合它的情形：回答会从很长"
       "的上下文中照抄名称和短语，而且不需要为草稿模型付出任何代价。")
"""),
]
