"""Reading an engines comparison: live or recorded, a figure, and the verdict on our C++ step against llama.cpp.

A comparison is the frame :func:`secbook.engines.suite.run` returns (or ``data/results/engines.csv``, the last
recorded one). Decode speed is bytes over time: one decode step reads the weights once, so
``tokens/s = (bytes read per second) / (bytes per token)``, and the ratio of two entries' speeds splits exactly into
the ratio of the bytes each reads per token and the ratio of how fast each reads them (:func:`split`). That is the
"why" a verdict prints: a format that stores fewer bits per weight wins on the first factor, a better kernel or
threading on the second.
"""
from __future__ import annotations

from ..claims import compare, times, times_zh
from .suite import RESULTS, run

OURS = "secbook C++ step"
# matched precisions: (our entry, llama.cpp's entry with the same nominal bits per weight)
MATCHED = (("secbook C++ step fp32", "llama.cpp F32"), ("secbook C++ step int8", "llama.cpp Q8_0"))


def recorded():
    """The last recorded comparison (``data/results/engines.csv``), or None if there is none."""
    from .. import paths
    from ..measure import load_results

    if not paths.find_result(f"{RESULTS}.csv").exists():
        return None
    return load_results(RESULTS)


def provenance(df) -> str:
    """Where a comparison was measured: CPU, cores, date (UTC) and the load average at the time."""
    cpu, cores, isa, date, load = _where(df)
    load = f", load average {load:g}" if load is not None else ""
    return f"{cpu} ({cores} cores, vector instructions {isa}), {date}{load}"


def provenance_zh(df) -> str:
    """:func:`provenance` in Chinese (for ``say(..., zh=...)``)."""
    cpu, cores, isa, date, load = _where(df)
    load = f"，负载均值 {load:g}" if load is not None else ""
    return f"{cpu}（{cores} 核，向量指令 {isa}），{date}{load}"


def _where(df):
    row = df.iloc[0]
    load = row["load_avg_1m"] if "load_avg_1m" in df and row["load_avg_1m"] == row["load_avg_1m"] else None
    return row["cpu"], row["cores"], row["cpu_isa"], str(row["timestamp"])[:10], load


def comparison(live: bool | None = None, model: str | None = None, rounds: int = 3, new_tokens: int = 32):
    """``(frame, sentence)``: the comparison run now on ``model`` (every installed engine, ``rounds`` rounds of
    ``new_tokens`` tokens, no question set) when ``live`` (default: when all engines are installed), else the
    recorded one; the sentence says which (:func:`about`). ``(None, sentence)`` when there is neither."""
    from .. import pretrained
    from . import missing

    model = model or pretrained.NAME
    if live is None:
        live = not missing()
    if live:
        df = run(models=(model,), rounds=rounds, new_tokens=new_tokens, questions=False, progress=False)
        df.attrs["live"] = True
    else:
        df = recorded()
    return df, about(df)


def about(df, lang: str = "en") -> str:
    """The sentence :func:`comparison` returns beside ``df``: measured live in this run (``df.attrs["live"]``),
    the recorded comparison, or neither (``df`` None); in Chinese with ``lang="zh"`` (:func:`about_zh`)."""
    from . import missing

    zh = lang == "zh"
    if df is None:
        if zh:
            return (f"这里没有安装这些引擎（缺少 {'、'.join(missing())}：`make engines`），也还没有记录过比较结果"
                    "（`python -m secbook bench --suite engines`）。")
        return (f"The engines are not installed here ({', '.join(missing())} missing: `make engines`) and no "
                "comparison is recorded yet (`python -m secbook bench --suite engines`).")
    entries, model = len(df), df["model"].iloc[0]
    rounds, new_tokens, threads = (int(df[c].iloc[0]) for c in ("rounds", "new_tokens", "threads"))
    groups = list(dict.fromkeys(df["timed_with"])) if "timed_with" in df and df["timed_with"].notna().all() else []
    if len(groups) > 1:
        apart = ("；".join(groups) + "——每组在各自的进程中，组内轮流计时，组与组先后运行（同一进程中加载的引擎运行库"
                 "会拖慢其他引擎）") if zh else \
            ("; ".join(groups) + " — each group in a process of its own, timed in turn within it, one group after the "
             "other (an engine's runtime loaded in the same process slows the others down)")
    else:
        apart = ""
    if df.attrs.get("live"):
        if zh:
            return (f"本次运行现场测量：在 {model} 上比较 {entries} 个条目，轮流测量 {rounds} 轮，每次生成 "
                    f"{new_tokens} 个新词元，{threads} 个线程（{provenance_zh(df)}）。" + (f"分组：{apart}。" if apart else ""))
        return (f"Measured live in this run: {entries} entries on {model}, {rounds} rounds in turn of "
                f"{new_tokens} new tokens each, {threads} threads ({provenance(df)})." + (f" Groups: {apart}." if apart
                                                                                         else ""))
    if zh:
        return (f"这里没有安装这些引擎（缺少 {'、'.join(missing())}），所以这是记录下来的比较结果 "
                f"data/results/{RESULTS}.csv：测量于 {provenance_zh(df)}，轮流测量 {rounds} 轮，每次生成 "
                f"{new_tokens} 个新词元，{threads} 个线程。" + (f"分组：{apart}。" if apart else ""))
    return (f"The engines are not installed here ({', '.join(missing())} missing), so this is the recorded "
            f"comparison, data/results/{RESULTS}.csv: measured on {provenance(df)}, {rounds} "
            f"rounds in turn of {new_tokens} new tokens, {threads} threads." + (f" Groups: {apart}." if apart else ""))


def about_zh(df) -> str:
    """:func:`about` in Chinese (for ``say(..., zh=...)``)."""
    return about(df, "zh")


def rounds_of(df, model: str) -> dict[str, list[float]]:
    """Each entry's decode tokens/s per round (measured in turn), by label."""
    sub = df[df["model"] == model]
    return {label: [float(x) for x in str(s).split(";")] for label, s in zip(sub["label"], sub["decode_tok_s_rounds"])}


def split(df, model: str, a: str, b: str) -> dict[str, float]:
    """How many times as fast ``a`` decoded as ``b``, split into two factors whose product it is: ``bytes`` (b's
    weight bytes per token ÷ a's) and ``rate`` (a's bytes read per second ÷ b's)."""
    rows = df[df["model"] == model].set_index("label")
    ra, rb = rows.loc[a], rows.loc[b]
    return {"speed": ra["decode_tok_s"] / rb["decode_tok_s"],
            "bytes": rb["weight_bytes_per_token"] / ra["weight_bytes_per_token"],
            "rate": ra["implied_GB_s"] / rb["implied_GB_s"]}


def verdict(df, model: str, lang: str = "en") -> list[str]:
    """Sentences on our C++ step against llama.cpp at matched precision, worded from ``df``: who decoded faster and
    by how much (round by round, :func:`secbook.claims.compare`), what each read per token, how fast it read it,
    and which of the two factors made the difference; in Chinese with ``lang="zh"`` (:func:`verdict_zh`)."""
    zh = lang == "zh"
    labels = set(df.loc[df["model"] == model, "label"])
    speeds = rounds_of(df, model)
    rows = df[df["model"] == model].set_index("label")
    out = []
    for ours, theirs in MATCHED:
        if ours not in labels or theirs not in labels:
            continue
        both = [(x, y) for x, y in zip(speeds[ours], speeds[theirs]) if x == x and y == y]  # rounds with both
        if not both:
            continue
        pair = {ours: [x for x, _ in both], theirs: [y for _, y in both]}
        c = compare(pair, ours, theirs)
        if c.median < 1:  # the faster one is the subject of the sentence
            c = compare(pair, theirs, ours)
        fast, slow = c.a, c.b
        f = split(df, model, fast, slow)
        o, t = rows.loc[ours], rows.loc[theirs]
        if zh:
            text = (f"**{ours} 对比 {theirs}**：{c.words_zh()}。每个词元 {ours} 以 {o['implied_GB_s']:.1f} GB/s"
                    f"（MBU {o['mbu']:.0%}）读取 {o['weight_bytes_per_token'] / 1e6:.0f} MB 权重，{theirs} 以 "
                    f"{t['implied_GB_s']:.1f} GB/s（MBU {t['mbu']:.0%}）读取 {t['weight_bytes_per_token'] / 1e6:.0f} MB。")
        else:
            text = (f"**{ours} vs {theirs}**: {c.words()}. Per token {ours} read "
                    f"{o['weight_bytes_per_token'] / 1e6:.0f} MB of weights at {o['implied_GB_s']:.1f} GB/s "
                    f"(MBU {o['mbu']:.0%}), {theirs} {t['weight_bytes_per_token'] / 1e6:.0f} MB at "
                    f"{t['implied_GB_s']:.1f} GB/s (MBU {t['mbu']:.0%}).")
        over = [x for x in (ours, theirs) if rows.loc[x, "mbu"] > 1]
        if over:
            if zh:
                text += (f"{'、'.join(over)} 的 MBU 超过 100 %：它读取权重的速度超过了本次运行开始时测得的读取带宽"
                         "（一次 PyTorch 归约），可见这个探测值低估了这台机器内存所能提供的带宽，这里它不是上限。")
            else:
                text += (f" An MBU above 100 % ({' and '.join(over)}) means the weights were read faster than the read "
                         "bandwidth probed at the start of the run (one PyTorch reduction): the probe understates what "
                         "this machine's memory delivers, so here it is no ceiling.")
        if c.verdict in ("faster", "slower"):
            bigger = "rate" if abs(_log(f["rate"])) >= abs(_log(f["bytes"])) else "bytes"
            if zh:
                why = "它读取字节的速度更快" if bigger == "rate" else "它要读取的字节更少"
                text += (f"两者中位数速度之比为 {times_zh(f['speed'])}，可拆成每个词元所读字节数之比 "
                         f"{times_zh(f['bytes'])}与读取速度之比 {times_zh(f['rate'])}的乘积：{fast} 胜出，主要是因为{why}。")
            else:
                why = ("it read its bytes faster" if bigger == "rate" else "it had fewer bytes to read")
                text += (f" The ratio of their median speeds, {times(f['speed'])}, is {times(f['bytes'])} from the "
                         f"bytes each reads per token times {times(f['rate'])} from how fast each reads them: {fast} "
                         f"wins mostly because {why}.")
        out.append(text)
    return out


def verdict_zh(df, model: str) -> list[str]:
    """:func:`verdict` in Chinese, sentence for sentence (for ``say(..., zh=...)``)."""
    return verdict(df, model, "zh")


def _log(x: float) -> float:
    import math

    return math.log(x) if x > 0 else 0.0


def plot(df, model: str, axes=None):
    """Two panels for ``model``: decode tokens/s per entry (median, bars; the spread of rounds as whiskers), and
    tokens/s against the weight bytes each reads per token, with the bound ``read bandwidth ÷ bytes`` drawn."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    sub = df[df["model"] == model].sort_values("decode_tok_s")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(sub) + 1.8))
    engines = list(dict.fromkeys(df["engine"]))
    colours = {e: plt.cm.tab10(i) for i, e in enumerate(engines)}
    ax = axes[0]
    y = np.arange(len(sub))
    err = [sub["decode_tok_s"] - sub["decode_tok_s_min"], sub["decode_tok_s_max"] - sub["decode_tok_s"]]
    ax.barh(y, sub["decode_tok_s"], xerr=np.clip(err, 0, None), color=[colours[e] for e in sub["engine"]],
            capsize=2)
    ax.set_yticks(y, sub["label"])
    ax.set(xlabel="decode tokens/s (median; whiskers: slowest and fastest round)",
           title=f"{model}, batch 1, {int(sub['threads'].iloc[0])} threads")
    ax = axes[1]
    mb = sub["weight_bytes_per_token"] / 1e6
    for e in engines:
        m = sub["engine"] == e
        ax.scatter(mb[m], sub["decode_tok_s"][m], color=colours[e], label=e, s=40)
    short = {"HF generate": "HF", OURS: "ours", "llama.cpp": "llama", "CTranslate2": "CT2",
             "ONNX Runtime GenAI": "ORT"}
    for i, (x, yv, e, p) in enumerate(zip(mb, sub["decode_tok_s"], sub["engine"], sub["precision"])):
        ax.annotate(f"{short.get(e, e)} {p}", (x, yv), textcoords="offset points", xytext=(5, 6 if i % 2 else -9),
                    fontsize=8)
    bw = sub["read_bandwidth_GB_s"].iloc[0]
    xs = np.geomspace(mb.min() * 0.7, mb.max() * 1.4, 50)
    ax.plot(xs, bw * 1e3 / xs, "k--", lw=1, label=f"read bandwidth bound ({bw:.1f} GB/s ÷ bytes)")
    ax.set(xscale="log", yscale="log", xlabel="weight MB read per token", ylabel="decode tokens/s",
           title="speed against bytes per token")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
    ax.tick_params(which="minor", labelsize=7)
    ax.legend(fontsize=8)
    plt.tight_layout()
    return axes
