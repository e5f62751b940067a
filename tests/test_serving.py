"""The serving stack: paged KV cache, scheduler, engine, the OpenAI-compatible server and the load tester.

Servers run on 127.0.0.1 only (in a thread of this process, or one child process for SIGTERM), every wait
is bounded, and every server is stopped by a context manager.
"""
import asyncio
import json
import os
import signal
import time

import pytest
import torch

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.timeout(300)  # a hung server fails its test instead of the whole run
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from secbook.serving import loadtest  # noqa: E402
from secbook.serving.blocks import BlockAllocator, CacheShape, OutOfBlocks, PagedKVCache  # noqa: E402
from secbook.serving.engine import Engine, QueueFull  # noqa: E402
from secbook.serving.launch import ServerProcess, build_engine, in_thread  # noqa: E402
from secbook.serving.runner import DecoderRunner, HFRunner, make_runner  # noqa: E402
from secbook.serving.server import State, parse_metrics  # noqa: E402

PROMPTS = ["import os\nimport ", "def fibonacci(n):\n    return", "class A:", "x = [i * i for i in range(10)]\n" * 6,
           "for i in range(10):\n", "#"]


def _ids(tok, prompts=PROMPTS):
    return [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]


class SlowRunner:
    """A runner that sleeps before every forward: makes queues build up deterministically in tests."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay
        self.cache, self.max_positions = inner.cache, inner.max_positions

    def forward(self, *args):
        time.sleep(self.delay)
        return self.inner.forward(*args)


def _state(tiny, delay: float = 0.0, **kw) -> State:
    model, tok = tiny
    state_kw = {k: kw.pop(k) for k in ("max_body_bytes",) if k in kw}
    engine = build_engine(model, kv_blocks=kw.pop("kv_blocks", 256), block_size=kw.pop("block_size", 8), **kw)
    if delay:
        engine.runner = SlowRunner(engine.runner, delay)
    return State(engine, tok, "tiny", model=model, **state_kw)


def _metrics(url: str) -> dict:
    return parse_metrics(httpx.get(url + "/metrics", timeout=5).text)


def _wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# --- blocks and the paged cache -----------------------------------------------------------------------------
def test_block_allocator():
    a = BlockAllocator(4)
    x = a.allocate(3)
    assert len(set(x)) == 3 and a.num_free == 1 and a.num_used == 3
    with pytest.raises(OutOfBlocks):
        a.allocate(2)
    assert a.num_free == 1  # all or nothing
    a.release(x[:2])
    assert a.num_free == 3
    with pytest.raises(ValueError):
        a.release(x[:1])  # already free


def test_paged_cache_reserve_and_stats():
    c = PagedKVCache(CacheShape(layers=2, kv_heads=1, head_dim=4), num_blocks=6, block_size=4)
    c.reserve(0, 5, planned=20)  # 2 blocks
    c.reserve(0, 8)  # still 2
    assert len(c.tables[0]) == 2 and c.allocator.num_used == 2
    assert c.can_reserve(1, 16) and not c.can_reserve(1, 17)
    pos = torch.tensor([[5, 6, 7]])
    b = c.batch([0], pos)
    k = torch.randn(1, 1, 3, 4)
    for layer in range(2):
        keys, values = b.write(layer, k, k, pos)
    assert keys.shape == (1, 1, 8, 4) and torch.equal(keys[0, 0, 5:8], k[0, 0])
    m = b.mask()
    assert m.shape == (1, 1, 3, 8) and m[0, 0, 0, 5] == 0 and m[0, 0, 0, 6] < -1e30  # causal
    s = c.stats()
    assert s["bytes_reserved"] == 2 * 4 * c.shape.bytes_per_token
    assert s["bytes_contiguous"] == 20 * c.shape.bytes_per_token
    c.free(0)
    assert c.allocator.num_used == 0 and c.stats()["bytes_reserved"] == 0
    c.reserve(1, 1)
    with pytest.raises(ValueError, match="no block"):
        c.batch([1], torch.tensor([[4]]))


@pytest.mark.parametrize("kind", ["decoder", "hf"])
def test_batched_paged_runner_equals_hf_generate(tiny, kind):
    """Greedy tokens of sequences of different lengths decoded together through the paged cache (blocks of 4),
    by our decoder or by transformers' forward, are HF generate's tokens for each prompt alone."""
    model, tok = tiny
    ids = _ids(tok)[:4]
    ref = [model.generate(torch.tensor([i]), max_new_tokens=10, do_sample=False, pad_token_id=0)[0, len(i):].tolist()
           for i in ids]
    r = make_runner(model, num_blocks=64, block_size=4, kind=kind)
    assert type(r) is {"decoder": DecoderRunner, "hf": HFRunner}[kind]
    seqs = list(range(len(ids)))
    for s, i in zip(seqs, ids):
        r.cache.reserve(s, len(i))
    out = [[int(t)] for t in r.forward(seqs, ids, [0] * len(ids)).argmax(-1)]
    for _ in range(9):
        lens = [len(i) + len(o) for i, o in zip(ids, out)]
        for s, n in zip(seqs, lens):
            r.cache.reserve(s, n)
        nxt = r.forward(seqs, [[o[-1]] for o in out], [n - 1 for n in lens]).argmax(-1)
        for o, t in zip(out, nxt):
            o.append(int(t))
    assert out == ref


@pytest.mark.parametrize("family", ["mistral", "gemma2", "gpt2", "qwen3"])
def test_decoder_runner_families(family):
    """Other families through the paged cache and our decoder: sliding windows shorter than the sequences
    (Mistral, Gemma 2 with soft-caps), learned positions (GPT-2), q/k norms (Qwen3) — batched, chunked
    prefill, same greedy tokens as HF generate alone."""
    from secbook.families import prompt, tiny_model

    model = tiny_model(family)
    ids = [prompt(length=n, seed=n)[0].tolist() for n in (3, 9, 14)]
    ref = [model.generate(torch.tensor([i]), max_new_tokens=8, do_sample=False)[0, len(i):].tolist() for i in ids]
    e = build_engine(model, kv_blocks=32, block_size=4, prefill_chunk=6, runner="decoder")
    assert isinstance(e.runner, DecoderRunner) and e.generate(ids, 8) == ref


# --- scheduler and engine -----------------------------------------------------------------------------------
def test_engine_output_independent_of_batch(tiny):
    """Same greedy tokens alone, in a continuous batch, a static batch, one at a time, with chunked prefill,
    and with so few KV blocks that sequences get preempted and recomputed; all blocks come back."""
    model, tok = tiny
    ids = _ids(tok) * 2
    limits = [4 + (5 * i) % 13 for i in range(len(ids))]
    alone = [build_engine(model, kv_blocks=64, block_size=8).generate([i], n)[0] for i, n in zip(ids, limits)]
    steps = {}
    for name, kw in {"continuous": {}, "static": {"policy": "static"}, "single": {"policy": "single"},
                     "chunked": {"prefill_chunk": 5}, "tight": {"kv_blocks": 14, "prefill_chunk": 16},
                     "hf": {"runner": "hf", "prefill_chunk": 7}}.items():
        e = build_engine(model, block_size=8, max_batch=8, **{"kv_blocks": 128, **kw})
        assert e.generate(ids, limits) == alone, name
        s = e.stats()
        assert s["kv_blocks_used"] == 0 and s["running"] == 0 and s["completed"] == len(ids)
        steps[name] = s["steps"]
        if name == "tight":
            assert s["preemptions"] > 0
    assert steps["continuous"] < steps["static"] < steps["single"]


def test_engine_queue_limit_and_validation(tiny):
    model, _ = tiny
    e = build_engine(model, kv_blocks=16, block_size=8, max_queue=2)
    e.submit([1, 2], 4)
    e.submit([1, 2], 4)
    with pytest.raises(QueueFull):
        e.submit([1, 2], 4)
    assert e.stats()["rejected"] == 1
    with pytest.raises(ValueError, match="context"):
        e.submit([1] * 10, e.max_model_len)
    with pytest.raises(ValueError, match="KV blocks"):
        Engine(e.runner, max_queue=5).submit([1] * 100, 100)  # 200 tokens > 16 blocks of 8


# --- the server ------------------------------------------------------------------------------------------------
def test_openai_api(tiny):
    """Completions and chat, streamed and not; streamed text = non-streamed text; usage; models, health,
    metrics; the official openai client works against it."""
    with in_thread(_state(tiny)) as url:
        assert httpx.get(url + "/health").json()["status"] == "ok"
        assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == "tiny"
        body = {"model": "tiny", "prompt": "def add(a, b):\n", "max_tokens": 12, "temperature": 0}
        r = httpx.post(url + "/v1/completions", json=body, timeout=30).json()
        assert r["object"] == "text_completion" and r["usage"]["completion_tokens"] >= 1
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=30) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            lines = [ln[6:] for ln in s.iter_lines() if ln.startswith("data: ")]
        assert lines[-1] == "[DONE]"
        chunks = [json.loads(x) for x in lines[:-1]]
        assert "".join(c["choices"][0]["text"] for c in chunks) == r["choices"][0]["text"]
        assert chunks[-1]["choices"][0]["finish_reason"] == r["choices"][0]["finish_reason"]
        chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "temperature": 0}
        c = httpx.post(url + "/v1/chat/completions", json=chat, timeout=30).json()
        assert c["object"] == "chat.completion" and c["choices"][0]["message"]["role"] == "assistant"
        full = httpx.post(url + "/v1/completions", json={"prompt": "import os\nimport ", "max_tokens": 12,
                                                         "temperature": 0}, timeout=30).json()["choices"][0]["text"]
        assert "\n" in full.strip("\n")
        stopped = httpx.post(url + "/v1/completions", json={"prompt": "import os\nimport ", "max_tokens": 12,
                                                            "temperature": 0, "stop": "\n"}, timeout=30).json()
        assert stopped["choices"][0] == {**stopped["choices"][0], "text": full[:full.index("\n")],
                                         "finish_reason": "stop"}
        m = _metrics(url)
        assert m['secbook_requests_total{outcome="completed"}'] == 5
        assert m['secbook_http_responses_total{code="200"}'] >= 5
        openai = pytest.importorskip("openai")
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=30)
        out = client.chat.completions.create(model="tiny", **chat)
        assert out.choices[0].message.content == c["choices"][0]["message"]["content"]


def test_bad_input_gets_400_with_json_error(tiny):
    with in_thread(_state(tiny, max_body_bytes=2000)) as url:
        ctx = 1024
        cases = [
            ("/v1/completions", b"{not json", "invalid JSON"),
            ("/v1/completions", b"[1, 2]", "JSON object"),
            ("/v1/completions", {"max_tokens": 4}, "prompt"),
            ("/v1/chat/completions", {"max_tokens": 4}, "messages"),
            ("/v1/chat/completions", {"messages": []}, "messages"),
            ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "content"),
            ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "role"),
            ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
            ("/v1/completions", {"prompt": "x", "max_tokens": -3}, "max_tokens"),
            ("/v1/completions", {"prompt": "x", "max_tokens": ctx}, "context"),
            ("/v1/completions", {"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
            ("/v1/completions", {"prompt": "x", "max_tokens": True}, "max_tokens"),
            ("/v1/completions", {"prompt": 42}, "prompt"),
            ("/v1/completions", {"prompt": "x", "model": "gpt-4"}, "unknown model"),
            ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "temperature"),
            ("/v1/completions", {"prompt": "x", "temperature": 5}, "temperature"),
            ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream"),
            ("/v1/completions", {"prompt": "x", "n": 3}, "n = 1"),
            ("/v1/completions", {"prompt": "", "max_tokens": 2}, "empty"),
            ("/v1/completions", {"prompt": "x", "echo": True}, "not supported"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
        ]
        for path, body, needle in cases:
            kw = {"content": body} if isinstance(body, bytes) else {"json": body}
            r = httpx.post(url + path, timeout=10, **kw)
            assert r.status_code == 400, (body, r.status_code, r.text)
            err = r.json()["error"]
            assert needle.lower() in err["message"].lower(), (body, err)
        big = {"prompt": "x" * 5000}
        r = httpx.post(url + "/v1/completions", json=big, timeout=10)
        assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
        assert httpx.get(url + "/health").status_code == 200  # still serving
        assert _metrics(url)['secbook_http_responses_total{code="400"}'] == len(cases)


def test_overload_gets_429_at_once_and_nothing_hangs(tiny):
    """max_batch 1, max_queue 2, a slowed engine: of 10 simultaneous requests 3 are accepted and finish, 7 get
    429 with Retry-After, quickly."""
    async def go(url):
        async with httpx.AsyncClient(timeout=30) as client:
            async def one():
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 8, "temperature": 0})
                return r, time.perf_counter() - t0
            return await asyncio.gather(*[one() for _ in range(10)])

    with in_thread(_state(tiny, delay=0.05, max_batch=1, max_queue=2)) as url:
        results = asyncio.run(asyncio.wait_for(go(url), 60))
        codes = sorted(r.status_code for r, _ in results)
        assert codes == [200] * 3 + [429] * 7
        for r, dt in results:
            if r.status_code == 429:
                assert r.headers.get("retry-after") and r.json()["error"]["code"] == "queue_full"
                assert dt < 2.0  # answered at once, not after the queue drained (3 x 8 x 50 ms)
        m = _metrics(url)
        assert m['secbook_requests_total{outcome="rejected"}'] == 7
        assert m['secbook_requests_total{outcome="completed"}'] == 3


def test_disconnect_mid_stream_frees_slot_and_blocks(tiny):
    with in_thread(_state(tiny, delay=0.02)) as url:
        body = {"prompt": "def f(x):\n", "max_tokens": 500, "temperature": 0, "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as s:
            lines = s.iter_lines()  # (breaking out of a for loop over it would close the stream already)
            for _ in range(3):
                assert next(ln for ln in lines if ln.startswith("data: "))
            m = _metrics(url)
            assert m["secbook_requests_running"] == 1 and m['secbook_kv_blocks{state="used"}'] > 0
        # leaving the block closed the connection mid-stream
        assert _wait_for(lambda: _metrics(url)['secbook_kv_blocks{state="used"}'] == 0)
        m = _metrics(url)
        assert m["secbook_requests_running"] == 0 and m['secbook_requests_total{outcome="cancelled"}'] == 1
        assert m["secbook_generation_tokens_total"] < 500


def test_same_tokens_alone_and_under_load(tiny):
    """A greedy answer is the same whether the request runs alone or among 15 others of mixed lengths."""
    prompt = {"prompt": "import sys\ndef main():\n", "max_tokens": 24, "temperature": 0}
    with in_thread(_state(tiny, max_batch=8, prefill_chunk=16)) as url:
        alone = httpx.post(url + "/v1/completions", json=prompt, timeout=30).json()["choices"][0]["text"]

        async def go():
            async with httpx.AsyncClient(timeout=60) as client:
                others = [client.post(url + "/v1/completions", json={"prompt": p * (1 + i % 3), "max_tokens": 8 + i,
                                                                      "temperature": 0})
                          for i, p in enumerate(PROMPTS * 2)]
                rs = await asyncio.gather(*others[:8], client.post(url + "/v1/completions", json=prompt), *others[8:])
                return rs
        rs = asyncio.run(asyncio.wait_for(go(), 60))
        assert all(r.status_code == 200 for r in rs)
        assert rs[8].json()["choices"][0]["text"] == alone
        assert _metrics(url)["secbook_decode_rows_total"] > _metrics(url)["secbook_steps_total"]  # batched


def test_soak_counts_match(tiny, tmp_path):
    """300 requests of mixed lengths, 32 at a time, against max_batch 8 / max_queue 16: every request ends
    ok or rejected (nothing lost, nothing hangs) and the server's counters equal the client's."""
    with in_thread(_state(tiny, max_batch=8, max_queue=16, kv_blocks=128)) as url:
        cfg = loadtest.LoadConfig(url, rate=0, requests=300, concurrency=32, max_tokens=(1, 12),
                                  endpoint="completions", timeout=60)
        records, info = loadtest.run(cfg)
        s = loadtest.summarize(records, info["wall_s"])
        assert s["requests"] == 300 and s["error"] == 0 and s["timeout"] == 0
        assert s["ok"] + s["rejected"] == 300 and s["ok"] > 0
        assert _wait_for(lambda: _metrics(url)["secbook_requests_running"] == 0)
        m = _metrics(url)
        assert m['secbook_requests_total{outcome="submitted"}'] == s["ok"]
        assert m['secbook_requests_total{outcome="completed"}'] == s["ok"]
        assert m['secbook_requests_total{outcome="rejected"}'] == s["rejected"]
        assert m["secbook_generation_tokens_total"] == s["output_tokens"]
        assert m['secbook_kv_blocks{state="used"}'] == 0
        path = loadtest.write_csv(records, tmp_path / "soak.csv")
        assert path.read_text().count("\n") == 301 and list(tmp_path.iterdir()) == [path]


# --- the load tester ---------------------------------------------------------------------------------------------
def test_loadtest_pieces(tmp_path):
    t = loadtest.arrivals(rate=50, duration=200, seed=1)
    assert abs(len(t) - 10000) < 4 * 100 and all(0 <= a < 200 for a in t) and t == sorted(t)
    assert loadtest.arrivals(0, 0, limit=3) == [0.0] * 3
    assert loadtest.percentile([1, 2, 3, 4], 50) == 2.5 and loadtest.percentile([], 50) is None
    recs = [{"status": "ok", "ttft_s": 0.5, "tpot_s": 0.05, "e2e_s": 1, "output_tokens": 10},
            {"status": "ok", "ttft_s": 2.0, "tpot_s": 0.05, "e2e_s": 3, "output_tokens": 10},
            {"status": "rejected", "ttft_s": None, "tpot_s": None, "e2e_s": 0.01, "output_tokens": 0}]
    s = loadtest.summarize(recs, wall_s=2.0, slo_ttft=1.0, slo_tpot=0.1)
    assert (s["ok"], s["rejected"], s["goodput_req_s"], s["output_tok_s"]) == (2, 1, 0.5, 10.0)
    assert loadtest.base_url("http://127.0.0.1:9/v1/") == "http://127.0.0.1:9"
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"messages": [{"role": "user", "content": "b"}]}\n')
    assert len(loadtest.load_prompts(tmp_path / "p.jsonl")) == 2
    with pytest.raises(ValueError):
        loadtest.LoadConfig("http://127.0.0.1:9", rate=0)


# --- the real commands, in a child process ----------------------------------------------------------------------
def test_serve_and_loadtest_commands_and_sigterm(tmp_path, capsys):
    """``python -m secbook serve`` answers ``python -m secbook loadtest`` (run in-process); on SIGTERM a
    stream in flight finishes, then the process exits 0."""
    from secbook.cli import main

    with ServerProcess.secbook("tiny", threads=1, max_batch=4) as srv:
        out = tmp_path / "lt.csv"
        assert main(["loadtest", srv.url, "--rate", "20", "--duration", "1", "--max-tokens", "4",
                     "--endpoint", "completions", "--out", str(out)]) == 0
        assert "TTFT (ms)" in capsys.readouterr().out and out.exists()
        body = {"prompt": "class Parser:\n", "max_tokens": 300, "temperature": 0, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as s:
            lines = s.iter_lines()
            first = next(ln for ln in lines if ln.startswith("data: "))
            assert "text" in first
            os.kill(srv.proc.pid, signal.SIGTERM)
            rest = [ln for ln in lines if ln.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] in ("length", "stop")
        assert srv.proc.wait(30) == 0
        assert "stopped after" in srv.log()


def test_loadtest_timeout_is_recorded_and_the_server_cancels(tiny):
    with in_thread(_state(tiny, delay=0.05)) as url:
        cfg = loadtest.LoadConfig(url, rate=0, requests=1, max_tokens=200, endpoint="completions", timeout=0.5)
        records, _ = loadtest.run(cfg)
        assert records[0]["status"] == "timeout" and "0.5 s" in records[0]["error"]
        assert _wait_for(lambda: _metrics(url)['secbook_requests_total{outcome="cancelled"}'] == 1)
        assert _metrics(url)['secbook_kv_blocks{state="used"}'] == 0
