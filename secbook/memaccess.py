"""How a CPU reads memory: whole cache lines, and a prefetcher that runs ahead of a sequential stream.

Memory does not deliver single numbers. The CPU fetches it in **cache lines** of 64 bytes (16 fp32 numbers) on
the x86-64 and ARM server CPUs of today, so reading one float from a line costs as much memory traffic as reading
all 16. And it does not wait to be asked: a **hardware prefetcher** watches the addresses a core reads and, when
they march through memory in order, fetches the next lines before the program needs them. An order it cannot
predict (random addresses) leaves each read waiting the full latency of memory. Hennessy & Patterson's
"Computer Architecture: A Quantitative Approach" (ch. 2) and Drepper's "What Every Programmer Should Know About
Memory" (2007) describe both.

:func:`access_patterns` shows the two effects with plain PyTorch on an array larger than the CPU's caches: sum
every float in order; sum one float per cache line (a sixteenth of the numbers, every line still fetched); and
gather one float per line by an index, once with the lines in order and once in a random order (the same
instructions, only the order differs). Each pattern runs once per round, in turn, so a shared machine's load
hits them alike. This is why a decode step wants its weights laid out in the order it reads them.
"""
from __future__ import annotations

import time

import torch

LINE_BYTES = 64  # the cache line of current x86-64 and ARM server CPUs
PATTERNS = ("every float, in order", "one float per cache line, in order", "one float per line by index, lines in order",
            "one float per line by index, lines in random order")


def access_patterns(mib: int = 64, rounds: int = 5, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per round of each pattern of :data:`PATTERNS` over one fp32 array of ``mib`` MiB, measured in turn
    (one warm-up round first). All four patterns fetch every cache line of the array once; the first one uses all
    the bytes it fetches, the others one float in 16. The two indexed ones run the same gather and differ only in
    the order of the lines. Their sums are checked against each other, so a wrong pattern cannot pass unnoticed."""
    if mib < 1 or rounds < 1:
        raise ValueError(f"need mib >= 1 and rounds >= 1, got mib={mib}, rounds={rounds}")
    per_line = LINE_BYTES // 4
    x = torch.randn(mib * 2**20 // 4, generator=torch.Generator().manual_seed(seed))
    lines = x.view(-1, per_line)
    in_order = torch.arange(lines.shape[0])
    shuffled = torch.randperm(lines.shape[0], generator=torch.Generator().manual_seed(seed + 1))
    fns = {PATTERNS[0]: lambda: x.sum(), PATTERNS[1]: lambda: x[::per_line].sum(),
           PATTERNS[2]: lambda: lines[in_order, 0].sum(), PATTERNS[3]: lambda: lines[shuffled, 0].sum()}
    firsts = [float(fns[p]()) for p in PATTERNS[1:]]  # warm-up, and the three one-per-line sums must agree
    if max(firsts) - min(firsts) > 1e-3 * (1 + abs(firsts[0])):
        raise AssertionError(f"the one-float-per-line patterns disagree: {firsts}")
    out: dict[str, list[float]] = {p: [] for p in PATTERNS}
    for _ in range(rounds):
        for p in PATTERNS:
            t0 = time.perf_counter()
            fns[p]()
            out[p].append(time.perf_counter() - t0)
    return out
