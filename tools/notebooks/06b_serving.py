"""Chapter 6.1 — Serving many users: an OpenAI-compatible server, continuous batching, paged KV, latency under load."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "06b_serving"

CELLS = [
    md(r"""
# Serving many users

Every chapter so far measured one request at a time. A chatbot or a voice assistant serves many people at once,
and what its users feel is **latency under load**: how long the first token takes when requests arrive at random
moments and queue behind each other, how fast the rest follows, and at what rate the whole thing tips over.
Chapter 3.2 *simulated* the scheduling idea that matters most here, continuous batching; this chapter runs it for
real: an HTTP server on this machine, a load generator, and the numbers that serving engines are judged by.

The server speaks the **OpenAI API**, the one every serving engine speaks (vLLM, SGLang, TGI, llama.cpp's
`server`, `transformers serve`), so the same client and the same load test work against all of them:

```bash
python -m secbook serve --model smollm2-135m-instruct --max-batch 8 --max-queue 64      # http://127.0.0.1:8000
python -m secbook loadtest http://127.0.0.1:8000 --rate 2 --duration 30 --out load.csv   # in another terminal
```

Behind the API sit three ideas, each a module of `secbook.serving`:

* **continuous batching** (`scheduler`, `engine`; Orca {cite}`yu2022orca`) — the running batch is re-formed at
  *every* decode step: a finished request leaves at once, a waiting one joins at once;
* a **paged KV cache** (`blocks`; vLLM's PagedAttention {cite}`kwon2023vllm`) — keys and values live in fixed-size
  blocks handed out on demand, with a block table per sequence, so memory is reserved as the answer grows instead
  of for the longest answer it might have; a request is admitted only if free blocks can hold its prompt;
* **chunked prefill** (Sarathi-Serve's idea {cite}`agrawal2024sarathi`) — a long prompt is fed a chunk
  (`--prefill-chunk`, 256 tokens) per step, so it delays the requests already decoding by one chunk at a time, not
  by its whole prompt. When blocks run out, the newest running request is preempted: its blocks are freed and it
  is recomputed later (vLLM's recompute preemption).

The forward pass is the book's own decoder (`secbook.decoder`, the one chapter 3.2 builds on) reading and writing
the paged cache. Everything below runs live against servers this notebook starts and stops on `127.0.0.1`.
"""),
    opening(["explain latency under load with Little's law and the arrival rate against the service rate",
             "run an OpenAI-compatible server with continuous batching and a paged KV cache, and load-test it",
             "read TTFT and TPOT percentiles, the latency-throughput knee and goodput under an SLO",
             "compare static and continuous batching, and our server with `transformers serve`, on the same load"],
            ["chapter 1 (TTFT, TPOT), chapter 3.2 (KV cache, batching, our decoder), chapter 6 (latency budgets)",
             "Python's asyncio at the level of reading code; no GPU"], 30),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import json, statistics, time
import httpx, pandas as pd
import matplotlib.pyplot as plt
from secbook import pretrained
from secbook.serving import loadtest
from secbook.serving.launch import MetricsSampler, ServerProcess
from secbook.serving.server import parse_metrics
from secbook.claims import say

MODEL = pretrained.NAME if pretrained.is_fetched() else "tiny"  # the real chat model when it is fetched
THREADS = 1          # torch threads of each server: one core serves, the other runs this notebook's load generator
MAX_TOKENS = 12      # per answer: short, so that a load run takes seconds
REQUESTS = 8         # arrivals per load run (a production load test sends thousands)
TIMEOUT = 30.0       # a request that takes longer counts as failed (and bounds every run)

def ours(policy="continuous", max_batch=8, max_queue=8):
    # python -m secbook serve on 127.0.0.1 and a free port; stopped (SIGTERM) when the with block ends
    return ServerProcess.secbook(MODEL, threads=THREADS, policy=policy, max_batch=max_batch, max_queue=max_queue)

print("measured on:", machine)
print("model:", MODEL)
"""),
    md(r"""
## One request, through HTTP

A streamed answer is a sequence of **server-sent events**: `data: {json}` lines, one per token here, closed by
`data: [DONE]`. The first lines of a streamed chat answer, then the assembled text:
"""),
    code(r"""
question = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 24, "temperature": 0, "stream": True}
BAD = {  # malformed requests: what does the server answer?
    "invalid JSON": b"{oops",
    "no messages": {"model": MODEL, "max_tokens": 8},
    "max_tokens = -3": {**question, "stream": False, "max_tokens": -3},
    "max_tokens past the context": {**question, "stream": False, "max_tokens": 10**6},
    "unknown model": {**question, "stream": False, "model": "gpt-4"},
    "messages is a string": {**question, "stream": False, "messages": "hello"},
    "2 MB body": {**question, "stream": False, "messages": [{"role": "user", "content": "x" * 2_000_000}]},
}

def probe(url, bad=BAD, timeout=10):
    # every malformed request (the oversize body last), and a good one before that: (table, good answer)
    served = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]  # the model name this server expects
    rows, good = [], None
    for name, body in bad.items():
        if name == "2 MB body":
            good = httpx.post(url + "/v1/chat/completions", json={**question, "stream": False, "model": served},
                              timeout=60)
        if isinstance(body, dict) and body.get("model") == MODEL:
            body = {**body, "model": served}
        kw = {"content": body} if isinstance(body, bytes) else {"json": body}
        try:
            r = httpx.post(url + "/v1/chat/completions", timeout=timeout, **kw)
            try:
                err = r.json().get("error", {}) if r.status_code != 200 else {"message": "(answered)"}
            except ValueError:
                err = {"message": r.text[:80]}
            err = err if isinstance(err, dict) else {"message": str(err)}
            rows.append({"request": name, "status": r.status_code, "code": err.get("code"),
                         "message": str(err.get("message", ""))[:90]})
        except httpx.HTTPError as e:
            rows.append({"request": name, "status": None, "code": type(e).__name__,
                         "message": f"no answer within {timeout} s" if isinstance(e, httpx.TimeoutException) else str(e)[:90]})
    return pd.DataFrame(rows), good

with ours() as srv:
    t0, arrivals, lines = time.perf_counter(), [], []
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json=question, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                lines.append(line)
                arrivals.append(time.perf_counter() - t0)
    bad_ours, after = probe(srv.url)
    metrics = parse_metrics(httpx.get(srv.url + "/metrics").text)

for line in lines[:3]:
    print(line[:150] + (" ..." if len(line) > 150 else ""))
chunks = [json.loads(l[6:]) for l in lines[:-1]]
text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
print("...\n" + lines[-1])
print(f"\nanswer: {text!r}")
print(f"{len(lines)} events; the first text arrived {1e3 * arrivals[1]:.0f} ms after the request, "
      f"the last {1e3 * arrivals[-1]:.0f} ms after it")
"""),
    md(r"""
A server meets bad input too. Each malformed request above gets a 4xx answer with a JSON error naming the field
(a body over the 1 MiB limit gets 413), and the server keeps serving — the greedy answer asked for after the bad
requests (before the oversize one) is checked below, as are the status codes:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print(bad_ours[["request", "status", "code"]].to_string(index=False))
print("answer after the bad requests:", after.status_code, repr(after.json()["choices"][0]["message"]["content"]))
"""),
    code(r"""
print(bad_ours[["request", "message"]].to_string(index=False))
print({k.split("{")[1][:-1]: int(v) for k, v in metrics.items() if k.startswith("secbook_http_responses_total")},
      "<- HTTP answers by status, from the server's /metrics")
"""),
    md(r"""
## The queueing picture

A server is a queue. Requests arrive at rate $\lambda$ (per second); the server completes them at most at its
service rate $\mu$. Two facts organise everything that follows.

* **Little's law** {cite}`little1961`: in any stable system, the mean number of requests inside it equals the arrival
  rate times the mean time each spends inside, $L = \lambda W$. It needs no assumption about the arrivals or the
  service — we check it below with two independent measurements: $L$ from the server's own queue counters,
  $\lambda$ and $W$ from the client's clock.
* **Utilisation** $\rho = \lambda / \mu$. As $\rho \to 1$ the waiting time explodes — in the textbook single-server
  queue with random (Poisson) arrivals the mean time in the system is $1 / (\mu - \lambda)$. Below the *knee* latency
  barely depends on load; past it the queue grows for as long as the overload lasts. Batching raises $\mu$, which
  moves the knee to the right.

Real users do not coordinate, so the load test draws **Poisson arrivals**: independent, with exponential gaps of mean
$1/\lambda$. It is an *open loop*: each request is sent at its time whatever the server is doing, and its latency is
measured from that time, so a slow server faces a growing queue as it would in production.

First the service time of one request alone (after a warm-up), which sets the scale: $\mu_1 = 1/S_1$ is how many
requests per second the server could complete serving them one at a time. The load runs then use arrival rates of
1, 2 and 4 times $\mu_1$ — at the first, a one-at-a-time server would already be at its knee.
"""),
    code(r"""
def alone(url, n=3):
    # n requests one after another; service time = latency minus the time spent waiting to be sent
    recs, _ = loadtest.run(loadtest.LoadConfig(url, rate=0, requests=n, concurrency=1, max_tokens=MAX_TOKENS))
    return [r["e2e_s"] - (r["sent_s"] - r["scheduled_s"]) for r in recs]

SLO = dict(slo_ttft=1.0, slo_tpot=0.15)  # chapter 6's chat budget: first token within 1 s, then reading pace
runs, records, samples = {}, {}, {}
with ours("continuous") as srv:
    alone(srv.url, 1)  # warm-up
    S1 = statistics.median(alone(srv.url))
    RATES = [round(f / S1, 2) for f in (1, 2, 4)]
    with MetricsSampler(srv.url, interval=0.1) as sampler:
        runs["continuous"], records["continuous"] = loadtest.sweep(
            srv.url, RATES, requests=REQUESTS, label="continuous", max_tokens=MAX_TOKENS, timeout=TIMEOUT, **SLO)
    samples["continuous"] = sampler
print(f"one request alone: S1 = {S1 * 1e3:.0f} ms, so mu_1 = {1 / S1:.2f} requests/s; arrival rates: {RATES} /s")
"""),
    md(r"""
### Little's law, checked

Over one load run, the server's mean number of requests inside (running + waiting, sampled from `/metrics` every
100 ms) against the client's completed requests per second times their mean latency:
"""),
    code(r"""
def little(run_row, sampler, recs):
    m = sampler.frame(run_row.t_start, run_row.t_end)
    L = (m["secbook_requests_running"] + m["secbook_requests_waiting"]).mean()
    ok = recs[(recs.rate == run_row.rate) & (recs.status == "ok")]
    lam = len(ok) / run_row.wall_s
    return L, lam, ok.e2e_s.mean()

for row in runs["continuous"].itertuples():
    L, lam, W = little(row, samples["continuous"], records["continuous"])
    print(f"arrivals {row.rate:.2f}/s: server's L = {L:.2f} requests inside; client's lambda x W = {lam:.2f}/s x "
          f"{W:.2f} s = {lam * W:.2f}")
"""),
    md(r"""
The two sides agree to within the sampling noise and the moments a request spends in the network and the HTTP
layer (counted by the client, not by the engine's queues).

## Static vs continuous batching

The same server with continuous batching turned off — `--policy static` admits a new batch only when the whole
previous batch has finished, which is what a server that calls `generate` on a padded batch does: a request that
arrives just after a batch started waits for all of it, and a short answer's slot stays idle until the longest
answer of its batch is done. Same arrival schedules (each rate has its own seed, shared by every server), same
prompts. (`--policy single`, one request at a time, is exercise 4.)
"""),
    code(r"""
with ours("static") as srv:
    alone(srv.url, 1)  # warm-up
    with MetricsSampler(srv.url, interval=0.1) as sampler:
        runs["static"], records["static"] = loadtest.sweep(
            srv.url, RATES, requests=REQUESTS, label="static", max_tokens=MAX_TOKENS, timeout=TIMEOUT, **SLO)
    samples["static"] = sampler

def table(frames):
    t = pd.concat(frames)
    out = pd.DataFrame({"server": t.server, "rate /s": t.rate, "sent": t.requests, "ok": t.ok,
                        "rejected": t.rejected, "failed": t.error + t.timeout})
    for k in ("ttft", "tpot"):
        for q in (50, 99):
            out[f"{k.upper()} p{q} ms"] = (1e3 * t[f"{k}_p{q}_s"]).round(0)
    out["tokens/s"] = t.output_tok_s.round(1)
    out["goodput /s"] = t.goodput_req_s.round(2)
    return out.reset_index(drop=True)

print("measured on:", secbook.describe_machine())
table([runs[p] for p in ("continuous", "static")])
"""),
    md(r"""
Two effects pull in opposite directions. A newcomer under static batching waits for the whole running batch to
finish, which is where its TTFT goes; under continuous batching it joins at the next step. But when it joins, its
prompt's prefill runs in the same step as the others' decode, so their next token waits for it: continuous batching
trades some TPOT for TTFT (chunked prefill caps each such wait at one chunk's forward). How many requests were decoded
together per step, on average, from the servers' counters:
"""),
    code(r"""
REJECTED = 'secbook_requests_total{outcome="rejected"}'
for policy, sampler in samples.items():
    last = sampler.samples[-1][1]
    print(f"{policy:>10}: {last['secbook_decode_rows_total'] / last['secbook_steps_total']:.2f} sequences per decode "
          f"step on average, {int(last['secbook_preemptions_total'])} preemptions, "
          f"{int(last[REJECTED])} requests turned away with 429")
"""),
    md(r"""
## The latency–throughput curve and its knee

Each point is one load run: the throughput the server actually delivered (output tokens per second) against the
latency users saw. Below the knee more load buys more throughput for little latency; at the knee latency shoots up
while throughput stops growing — that is the server's capacity under this policy.
"""),
    code(r"""
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for policy, frame in runs.items():
    axes[0].plot(frame.output_tok_s, 1e3 * frame.ttft_p99_s, "o-", label=policy)
    line, = axes[1].plot(frame.rate, 1e3 * frame.ttft_p50_s, "o-", label=f"{policy} p50")
    axes[1].plot(frame.rate, 1e3 * frame.ttft_p99_s, "o--", color=line.get_color(), label=f"{policy} p99")
    axes[2].plot(frame.rate, 1e3 * frame.tpot_p50_s, "o-", color=line.get_color(), label=f"{policy} p50")
    axes[2].plot(frame.rate, 1e3 * frame.tpot_p99_s, "o--", color=line.get_color(), label=f"{policy} p99")
axes[0].set(xlabel="delivered throughput (output tokens/s)", ylabel="p99 TTFT (ms)", yscale="log",
            title="latency vs throughput")
axes[1].set(xlabel="arrival rate (requests/s)", ylabel="TTFT (ms)", yscale="log", title="time to first token")
axes[2].set(xlabel="arrival rate (requests/s)", ylabel="TPOT (ms)", title="time per output token")
axes[0].axhline(1e3 * SLO["slo_ttft"], color="grey", ls=":", lw=1)
axes[1].axhline(1e3 * SLO["slo_ttft"], color="grey", ls=":", lw=1)
axes[2].axhline(1e3 * SLO["slo_tpot"], color="grey", ls=":", lw=1)
for ax in axes:
    ax.legend(fontsize=7)
plt.tight_layout(); plt.show()
for policy, frame in runs.items():
    ok = frame[frame.ttft_p99_s <= SLO["slo_ttft"]]
    best = f"{ok.rate.max():.2f} requests/s" if len(ok) else "none of the rates tried"
    print(f"{policy:>10}: p99 TTFT within {SLO['slo_ttft']:.0f} s up to {best}; at the highest rate "
          f"p99 TTFT {runs[policy].ttft_p99_s.iloc[-1]:.2f} s, {runs[policy].output_tok_s.iloc[-1]:.1f} tokens/s")
"""),
    md(r"""
## TTFT distributions

Percentiles summarise; the whole distribution shows where the tail comes from. At the middle arrival rate, the
share of requests whose first token came within a given time (an empirical CDF):
"""),
    code(r"""
mid = RATES[1]
fig, ax = plt.subplots(figsize=(6, 3.4))
for policy, recs in records.items():
    t = recs[(recs.rate == mid) & (recs.status == "ok")].ttft_s.sort_values()
    ax.step(1e3 * t, (1 + pd.Series(range(len(t)))) / len(t), where="post", label=f"{policy} ({len(t)} requests)")
ax.set(xlabel="TTFT (ms)", ylabel="share of requests", xscale="log", title=f"TTFT at {mid} requests/s")
ax.axvline(1e3 * SLO["slo_ttft"], color="grey", ls=":", lw=1); ax.legend(); plt.tight_layout(); plt.show()
for policy, recs in records.items():
    t = recs[(recs.rate == mid) & (recs.status == "ok")].ttft_s
    print(f"{policy:>10}: median TTFT {1e3 * t.median():.0f} ms, slowest {1e3 * t.max():.0f} ms")
"""),
    md(r"""
With few requests per run the p99 is close to the slowest request; a production load test runs minutes, not
seconds (`--duration 300`), for stable tails.

## Paged KV memory: reserved vs used

A server that gives each request one contiguous KV buffer must size it before the answer exists: for prompt +
`max_tokens` if the client says how long it may be, for the whole context if not (a static cache sized to the model's
context, as in chapter 3.2). The paged cache reserves a block of 16 token slots at a time, as the answer grows.
During the continuous run the server reported, every 100 ms, the bytes its blocks reserved, the bytes actually
written, and what contiguous buffers would have reserved for the same requests:
"""),
    code(r"""
m = samples["continuous"].frame()
m = m[m['secbook_kv_bytes{kind="used"}'] > 0]
used, reserved, planned = (m[f'secbook_kv_bytes{{kind="{k}"}}'] for k in ("used", "reserved", "contiguous"))
context = m.secbook_kv_sequences * m.secbook_context_tokens * m.secbook_kv_bytes_per_token
t = m.t - m.t.iloc[0]
fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.plot(t, context / 2**20, label=f"contiguous, whole context ({int(m.secbook_context_tokens.iloc[0])} tokens) each")
ax.plot(t, planned / 2**20, label="contiguous, prompt + max_tokens each")
ax.plot(t, reserved / 2**20, label="paged: blocks reserved")
ax.plot(t, used / 2**20, label="written")
ax.set(xlabel="time (s)", ylabel="KV cache (MiB)", yscale="log", title="the continuous run, all three rates")
ax.legend(fontsize=8); plt.tight_layout(); plt.show()
say(f"paged: on average {((reserved - used) / reserved).mean():.0%} of the space the blocks reserved was not "
    f"written (the unfilled part of each sequence's last block); contiguous buffers of prompt + max_tokens would have "
    f"reserved {(planned / reserved).mean():.2f}x the paged reservation, buffers of the whole context "
    f"{(context / reserved).mean():.0f}x, {((context - used) / context).mean():.1%} of it never written",
    zh=f"分页：平均而言，块所预留的空间中有 {((reserved - used) / reserved).mean():.0%} 没有写入（即每个序列最后一个块中"
       f"未填满的部分）；按提示 + max_tokens 分配的连续缓冲区会预留分页预留量的 {(planned / reserved).mean():.2f} 倍，"
       f"按整个上下文分配的缓冲区则为 {(context / reserved).mean():.0f} 倍，其中 "
       f"{((context - used) / context).mean():.1%} 从未写入");
"""),
    md(r"""
With answers capped at a few tokens, as here, prompt + `max_tokens` is a tight bound and paging saves little over it;
the waste of a contiguous reservation grows with `max_tokens`, and a server that must allow for the whole context
reserves orders of magnitude more than answers use — the memory that lets vLLM run a larger batch on the same GPU. Pages cost something too: attention must gather each sequence's blocks (here an indexed copy; vLLM's
PagedAttention kernel reads the blocks in place), and a block size trades fragmentation (large blocks) against
table size and gather overhead (small blocks).

## Goodput

Throughput counts every token; users count only answers that arrived in time. **Goodput** is the number of completed
requests per second that met the service-level objective (SLO) {cite}`zhong2024distserve` — the rate the server can
sustain *as good service*. The SLO here is chapter 6's chat budget: the first token within about a second, then at
least reading pace (300 words a minute at roughly 1.3 tokens a word is about 6.5 tokens/s: TPOT ≤ 150 ms). The table
above has goodput in its last column; as a share of the requests sent:
"""),
    code(r"""
g = pd.concat(runs.values()).pivot(index="rate", columns="server", values="good_fraction")
print("share of requests served within the SLO (rows: arrival rate per second)")
(100 * g).round(0).astype(int).astype(str) + "%"
"""),
    md(r"""
## The anchor: `transformers serve`

transformers ships an OpenAI-compatible server too, with its own continuous batching and paged cache
(`transformers serve MODEL --continuous-batching`, installed with `pip install "transformers[serving]"`). Same
model, same machine, same load, one torch thread each — the load test does not need to know which server it talks to:
"""),
    code(r"""
import importlib.util
have_anchor = all(importlib.util.find_spec(m) for m in ("fastapi", "openai", "uvicorn"))
path = pretrained.require() if MODEL == pretrained.NAME else secbook.paths.find_model(MODEL)
# By default it sizes its KV cache from the free memory (on a CPU: most of the RAM); give it our budget instead,
# 256 MiB, in its blocks of 256 tokens, and our prefill chunk of 256 tokens per step.
bpt = samples["continuous"].samples[-1][1]["secbook_kv_bytes_per_token"]
TF_OPTIONS = ["--cb-num-blocks", str(max(1, 256 * 2**20 // (256 * int(bpt)))), "--cb-max-batch-tokens", "256"]
if have_anchor:
    with ServerProcess.transformers(path, continuous_batching=True, threads=THREADS, extra=TF_OPTIONS) as tf:
        t0 = time.perf_counter()
        alone(tf.url, 1)  # warm-up (its first request also sets up the batching manager)
        warm = time.perf_counter() - t0
        S1_tf = statistics.median(alone(tf.url))
        runs["transformers serve"], records["transformers serve"] = loadtest.sweep(
            tf.url, RATES, requests=REQUESTS, label="transformers serve", max_tokens=MAX_TOKENS, timeout=TIMEOUT,
            **SLO)
        bad_tf, after_tf = probe(tf.url)
    print(f"transformers serve: first request {warm:.1f} s, then one request alone {S1_tf * 1e3:.0f} ms "
          f"(ours: {S1 * 1e3:.0f} ms)")
    display(table([runs["continuous"], runs["transformers serve"]]))
else:
    print("transformers serve needs: pip install 'transformers[serving]' — skipped here")
"""),
    md(r"""
And the same malformed requests, sent to it after the load runs, with a good request before the oversize one:
"""),
    code(r"""
if have_anchor:
    print(bad_tf[["request", "status", "message"]].to_string(index=False))
    print("the good request:", after_tf.status_code, after_tf.text[:160])
"""),
    code(r"""
if have_anchor:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, f in runs.items():
        line, = axes[0].plot(f.rate, 1e3 * f.ttft_p50_s, "o-", label=f"{name}, p50")
        axes[0].plot(f.rate, 1e3 * f.ttft_p99_s, "o--", color=line.get_color(), label=f"{name}, p99")
        axes[1].plot(f.rate, 1e3 * f.tpot_p50_s, "o-", color=line.get_color(), label=f"{name}, p50")
        axes[1].plot(f.rate, 1e3 * f.tpot_p99_s, "o--", color=line.get_color(), label=f"{name}, p99")
    axes[0].set(xlabel="arrival rate (requests/s)", ylabel="TTFT (ms)", yscale="log", title="same model, same load")
    axes[1].set(xlabel="arrival rate (requests/s)", ylabel="TPOT (ms)", title="same model, same load")
    for ax in axes:
        ax.legend(fontsize=7)
    plt.tight_layout(); plt.show()
"""),
    md(r"""
## Past one machine: vLLM and SGLang

On a GPU the same load test points at a production engine; nothing in it changes but the URL (and the model name the
server reports):

```bash
pip install vllm                      # or: pip install "sglang[all]"
vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --port 8000 --max-num-seqs 256
# python -m sglang.launch_server --model-path HuggingFaceTB/SmolLM2-135M-Instruct --port 8000
python -m secbook loadtest http://127.0.0.1:8000 --rate 50 --duration 120 --concurrency 512 --out vllm.csv
```

Both implement what this chapter measured, at GPU scale: continuous batching with hundreds of sequences per step,
PagedAttention's kernel reading the KV blocks in place (SGLang {cite}`zheng2024sglang` adds RadixAttention, sharing
the KV blocks of common prompt prefixes between requests), chunked prefill, CUDA graphs for the decode step, and an admission queue.

When one GPU is not enough, they scale out in two directions:

* **bigger models: split each layer.** Tensor parallelism (Megatron-LM {cite}`shoeybi2019megatron`; chapter 3.3)
  divides every weight matrix across the GPUs of one machine, which all-reduce after each layer:
  `vllm serve MODEL --tensor-parallel-size 8` (SGLang: `--tp 8`). Pipeline parallelism puts groups of layers on
  different machines: `--pipeline-parallel-size 2` across two nodes, which vLLM coordinates through a **Ray** cluster
  (`ray start --head` on one node, `ray start --address=HEAD:6379` on the others, then `vllm serve` on the head).
* **more users: replicate.** Independent copies of the server behind a load balancer, each with its own batch and KV
  cache; a prefix-aware router sends requests sharing a prompt prefix to the replica that has it cached.

The quantities stay the ones measured here — TTFT and TPOT percentiles, the knee, goodput under an SLO — only the
numbers move. This chapter does not quote GPU numbers: run the load test on the machine you have.
"""),
    summary(["Under load, latency is queueing: Little's law (L = λW) ties the requests in the system to the arrival "
             "rate and the time each spends, and once arrivals outpace service the queue, and TTFT, grow without bound.",
             "Continuous batching re-forms the batch at every decode step, so a request waits for a step, not for a "
             "whole batch to finish; a paged KV cache reserves memory block by block as answers grow.",
             "Serving is judged by percentiles (p50, p99) of TTFT and TPOT against the arrival rate, and by goodput: "
             "the requests per second that met the latency objective.",
             "The load test speaks only the OpenAI API, so the same measurement runs unchanged against vLLM, SGLang "
             "or `transformers serve`."]),
    md("## Exercises"),
    exercise(1, """Little's law backwards: at the highest arrival rate, how many requests would the continuous server
hold on average if its mean latency stayed what it was at the lowest rate? Compare with what its counters showed."""),
    solution(r"""
row_lo, row_hi = runs["continuous"].iloc[0], runs["continuous"].iloc[-1]
W_lo = records["continuous"].query("rate == @row_lo.rate and status == 'ok'").e2e_s.mean()
L_hi, lam_hi, W_hi = little(row_hi, samples["continuous"], records["continuous"])
print(f"lambda x W_low = {lam_hi:.2f} x {W_lo:.2f} = {lam_hi * W_lo:.2f} requests; measured L = {L_hi:.2f} "
      f"(latency grew from {W_lo:.2f} s to {W_hi:.2f} s: the extra requests are the queue)")
"""),
    exercise(2, """Goodput depends on the SLO. Recompute, from the recorded requests, the goodput of every policy at
every rate for a strict interactive SLO (TTFT ≤ 300 ms, TPOT ≤ 50 ms) and a lenient batch SLO (TTFT ≤ 5 s, no
TPOT limit). Which policy wins under which?"""),
    solution(r"""
rows = []
for name, recs in records.items():
    for rate, group in recs.groupby("rate"):
        wall = runs[name].set_index("rate").wall_s[rate]
        for slo_name, slo in (("strict", (0.3, 0.05)), ("lenient", (5.0, float("inf")))):
            s = loadtest.summarize(group.to_dict("records"), wall, *slo)
            rows.append({"server": name, "rate": rate, "SLO": slo_name, "goodput /s": round(s["goodput_req_s"], 2)})
goodputs = pd.DataFrame(rows)
SLO_ZH = {"strict": "严格的", "lenient": "宽松的"}
for slo_name, group in goodputs.groupby("SLO"):
    mean = group.groupby("server")["goodput /s"].mean().sort_values(ascending=False)
    slo_name_zh = SLO_ZH[slo_name]
    if mean.iloc[0] == 0:
        say(f"{slo_name} SLO: no server met it for any request at any rate on this machine",
            zh=f"{slo_name_zh} SLO：在这台机器上，没有一个服务器在任何到达率下让任何一个请求满足它")
    else:
        rest = ", then " + ", ".join(f"{k} ({v:.2f}/s)" for k, v in mean.iloc[1:].items()) if len(mean) > 1 else ""
        rest_zh = "，其次是 " + "、".join(f"{k}（{v:.2f}/s）" for k, v in mean.iloc[1:].items()) if len(mean) > 1 else ""
        say(f"{slo_name} SLO: highest mean goodput over the rates: {mean.index[0]} ({mean.iloc[0]:.2f}/s){rest}",
            zh=f"{slo_name_zh} SLO：各到达率上平均有效吞吐量最高的是 {mean.index[0]}（{mean.iloc[0]:.2f}/s）{rest_zh}")
goodputs.pivot(index=["SLO", "rate"], columns="server", values="goodput /s")
"""),
    exercise(3, """Block size. The client records hold each request's prompt and answer length (from the server's
`usage`). If every request had kept its blocks to the end, how much of the reserved space would blocks of 1, 16, 64
and 256 token slots have left unused, and how many KiB per sequence is that? (The server reports the bytes of one
token's keys and values in `/metrics`.)"""),
    solution(r"""
bpt = samples["continuous"].samples[-1][1]["secbook_kv_bytes_per_token"]
ok = records["continuous"].query("status == 'ok'")
lengths = ok.prompt_tokens + ok.output_tokens
for bs in (1, 16, 64, 256):
    reserved = (-(-lengths // bs) * bs)
    print(f"block of {bs:>3}: {((reserved - lengths) / reserved).mean():5.1%} of reserved slots unused, "
          f"{((reserved - lengths) * bpt).mean() / 1024:.0f} KiB wasted per sequence")
"""),
    exercise(4, """One at a time, and overload protection. Start a server with `policy="single", max_queue=2` and send
10 requests at once (`rate=0, requests=10`): how many are accepted, how quickly do the others get their 429, and
what does the `Retry-After` header tell a client?"""),
    solution(r"""
with ours("single", max_queue=2) as srv:
    recs, info = loadtest.run(loadtest.LoadConfig(srv.url, rate=0, requests=10, max_tokens=MAX_TOKENS))
frame = pd.DataFrame(recs)
print(frame.groupby("status").e2e_s.agg(["count", "max"]).rename(columns={"max": "slowest answer (s)"}))
print("Retry-After of the rejected requests (seconds to wait before trying again):",
      sorted(set(frame.retry_after.dropna())))
"""),
]
