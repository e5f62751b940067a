"""Serving many users: an OpenAI-compatible server with continuous batching over a paged KV cache.

One module per idea, lower layers first:

* ``blocks``    — the block allocator and the paged KV cache (vLLM's PagedAttention, Kwon et al., SOSP'23);
* ``runner``    — one forward pass over a batch of sequences of different lengths, reading and writing the
                  paged cache (the model's own maths: the HF forward, or secbook's decoder where available);
* ``scheduler`` — waiting and running queues, admission by free KV blocks, preemption; continuous
                  (Orca, Yu et al., OSDI'22), static and one-at-a-time policies;
* ``engine``    — the loop that runs a scheduler step and a runner step over and over, in its own thread;
* ``server``    — the ASGI app: the OpenAI API (completions, chat, SSE streaming), /health, /metrics;
* ``launch``    — start and stop a server process on 127.0.0.1 with bounded waits (tests, the chapter);
* ``loadtest``  — an asynchronous OpenAI-API client with Poisson arrivals: TTFT, TPOT, latency, goodput.
"""
