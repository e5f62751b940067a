"""Knowledge distillation: train a small student on a large teacher's soft predictions.

Hinton, Vinyals & Dean (2015): the teacher's full next-token distribution, softened by a temperature
``T``, carries more information per example than the one-hot label ("dark knowledge"): which wrong
tokens are *almost* right. The student minimises ``α·T²·KL(p_teacher^T ‖ p_student^T) + (1-α)·CE``; the
``T²`` keeps the gradient scale of the soft term independent of ``T``. DistilBERT (Sanh et al., 2019)
and MiniLLM (Gu et al., 2024) apply the same idea to transformers. Here the student keeps the teacher's
tokenizer and vocabulary (so it can serve as the draft model of speculative decoding) and has fewer
and/or narrower layers. A baseline student with the same shape, data, seed and number of steps but
trained on the labels alone shows what the teacher adds.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .measure import PPL_TOKENS
from .train import lr_at, make_optimizer


@dataclass
class DistillConfig:
    """The student's shape and the training recipe."""
    layers: int = 2
    hidden_size: int = 256
    intermediate_size: int = 768
    heads: int = 4
    kv_heads: int = 2
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 20
    temperature: float = 2.0
    alpha: float = 0.5
    init: str = "teacher"  # "teacher": copy embeddings and evenly spaced layers (Sanh et al., 2019); "random"
    seed: int = 0


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                 temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1-α)·CE(s, labels)`` averaged over tokens. ``labels`` are the
    next tokens (already shifted), shape ``[..., ]`` matching the logits' leading dims."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    V = student_logits.shape[-1]
    s = student_logits.reshape(-1, V).float()
    t = teacher_logits.reshape(-1, V).float()
    ce = F.cross_entropy(s, labels.reshape(-1))
    if alpha == 0:
        return ce
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean")
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


def make_student(teacher, cfg: DistillConfig):
    """A fresh model of the teacher's architecture and vocabulary, with the student's depth and width."""
    from transformers import AutoModelForCausalLM

    conf = teacher.config.__class__.from_dict(teacher.config.to_dict())
    conf.num_hidden_layers = cfg.layers
    conf.hidden_size = cfg.hidden_size
    conf.intermediate_size = cfg.intermediate_size
    conf.num_attention_heads = cfg.heads
    conf.num_key_value_heads = cfg.kv_heads
    conf.head_dim = cfg.hidden_size // cfg.heads
    if hasattr(conf, "layer_types") and conf.layer_types is not None:
        conf.layer_types = conf.layer_types[:cfg.layers]
    torch.manual_seed(cfg.seed)
    student = AutoModelForCausalLM.from_config(conf, dtype=torch.float32)
    if cfg.init == "teacher":
        init_from_teacher(student, teacher)
    elif cfg.init != "random":
        raise ValueError(f"init={cfg.init!r} is not supported; choose 'teacher' or 'random'")
    return student


def teacher_layers(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spaced teacher layers (first and last included) to initialise the student's layers."""
    if n_student > n_teacher:
        raise ValueError(f"the student ({n_student} layers) must not be deeper than the teacher ({n_teacher})")
    return torch.linspace(0, n_teacher - 1, n_student).round().long().tolist()


def init_from_teacher(student, teacher) -> list[int]:
    """Copy the teacher's embeddings, final norm and evenly spaced blocks into the student (same width
    needed), as DistilBERT does (Sanh et al., 2019). Returns the teacher layer indices used."""
    sc, tc = student.config, teacher.config
    if (sc.hidden_size, sc.intermediate_size, sc.num_attention_heads, sc.num_key_value_heads) != (
            tc.hidden_size, tc.intermediate_size, tc.num_attention_heads, tc.num_key_value_heads):
        raise ValueError("init='teacher' needs the teacher's width (hidden, MLP, heads); use init='random' "
                         "for a narrower student")
    picks = teacher_layers(tc.num_hidden_layers, sc.num_hidden_layers)
    tsd = teacher.state_dict()
    new = {}
    for k in student.state_dict():
        src = k
        parts = k.split(".")
        if "layers" in parts:
            i = parts.index("layers") + 1
            parts[i] = str(picks[int(parts[i])])
            src = ".".join(parts)
        new[k] = tsd[src].detach().clone()
    student.load_state_dict(new)
    return picks


def train_student(teacher, stream: torch.Tensor, cfg: DistillConfig, use_teacher: bool = True,
                  progress: bool = True, desc: str | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train a student on random windows of the token ``stream``; with ``use_teacher`` the loss is the
    distillation loss, without it plain cross-entropy. Same seed → same batches for both. Returns
    ``(student, history)`` with the loss every step."""
    from tqdm.auto import tqdm

    if cfg.steps <= 0:
        raise ValueError(f"steps must be positive, got {cfg.steps}")
    student = make_student(teacher, cfg).train()
    teacher.eval()
    opt = make_optimizer(student, cfg.lr, weight_decay=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    hist = []
    bar = tqdm(range(cfg.steps), desc=desc or ("distil" if use_teacher else "baseline"), disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)  # the tiny model's warm-up + cosine schedule
        starts = torch.randint(0, len(stream) - cfg.seq_len - 1, (cfg.batch_size,), generator=gen)
        x = torch.stack([stream[s:s + cfg.seq_len + 1] for s in starts.tolist()])
        inp, labels = x[:, :-1], x[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            s_logits = student(input_ids=inp).logits
            if use_teacher:
                with torch.no_grad():
                    t_logits = teacher(input_ids=inp).logits
                loss = distill_loss(s_logits, t_logits, labels, cfg.temperature, cfg.alpha)
            else:
                loss = F.cross_entropy(s_logits.float().reshape(-1, s_logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        hist.append({"step": step + 1, "loss": loss.item()})
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return student.eval(), hist


def training_stream(tokenizer, max_files: int | None = None) -> torch.Tensor:
    """The training text as one token stream (end-of-text between files), as the teacher was trained."""
    from .corpus import read_split
    from .train import encode_stream

    train, _ = read_split()
    return encode_stream(tokenizer, train[:max_files] if max_files else train)


def _speed(model, tokenizer) -> dict:
    from .measure import time_generation
    t = time_generation(model, tokenizer, prompt_len=32, new_tokens=32, warmup=1, repeats=3)
    return {"decode_tokens_per_s": round(t.tokens_per_s, 1), "ttft_ms": round(t.ttft_s * 1000, 2)}


def run(teacher_name: str = "tiny", out: str | Path | None = None, cfg: DistillConfig | None = None,
        progress: bool = True, max_tokens: int = PPL_TOKENS) -> dict:
    """Train the distilled student and the label-only baseline, measure teacher/student/baseline
    (perplexity on the held-out text, parameters, speed), save the student in Hugging Face format under
    ``data/models/student`` with a model card and ``distill_results.json``; return the comparison."""
    from . import load
    from .corpus import heldout_text
    from .measure import perplexity
    from .paths import MODELS_DIR, RESULTS_DIR
    from .train import atomic_save

    cfg = cfg or DistillConfig()
    out = Path(out) if out else MODELS_DIR / "student"
    teacher, tok = load(teacher_name)
    stream = training_stream(tok)
    text = heldout_text()
    results = {"config": asdict(cfg), "teacher": teacher_name}
    t0 = time.perf_counter()
    student, h_s = train_student(teacher, stream, cfg, use_teacher=True, progress=progress)
    t_student = time.perf_counter() - t0
    t0 = time.perf_counter()
    base, h_b = train_student(teacher, stream, cfg, use_teacher=False, progress=progress)
    t_base = time.perf_counter() - t0
    for name, m, mins in (("teacher", teacher, None), ("student", student, t_student / 60),
                          ("baseline_student", base, t_base / 60)):
        row = {"parameters": sum(p.numel() for p in m.parameters()),
               "heldout_perplexity": round(perplexity(m, tok, text, max_tokens=max_tokens), 3)}
        if mins is not None:
            row["train_minutes"] = round(mins, 2)
        try:
            row.update(_speed(m, tok))
        except Exception as e:  # the measurement module may be missing while the book is being written
            row["speed_error"] = str(e)
        results[name] = row
    results["final_loss"] = {"student": h_s[-1]["loss"], "baseline_student": h_b[-1]["loss"]}
    results["perplexity_tokens"] = max_tokens
    try:
        from .measure import machine_info
        results["machine"] = machine_info()
    except Exception:
        import os
        import platform
        results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                              "torch": torch.__version__}
    student.generation_config.do_sample = False
    student.generation_config.pad_token_id = tok.pad_token_id
    atomic_save(student, tok, out, model_card(results))
    (out / "distill_results.json").write_text(json.dumps(results, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS_DIR / "distill.json.tmp"
    tmp.write_text(json.dumps({**results, "history_student": h_s, "history_baseline": h_b}, indent=1))
    tmp.replace(RESULTS_DIR / "distill.json")
    return results


def model_card(r: dict) -> str:
    c = r["config"]
    t, s, b = r["teacher"], r["student"], r["baseline_student"]
    m = r.get("machine", {})
    return f"""# secbook `student` — the tiny model, distilled

A {c['layers']}-layer student (hidden {c['hidden_size']}, MLP {c['intermediate_size']}, {c['heads']} heads,
{c['kv_heads']} key/value heads) trained by `python -m secbook distill` from the logits of the secbook
`{t}` model (Hinton et al., 2015: loss = {c['alpha']}·T²·KL + {1 - c['alpha']:.1f}·CE, T = {c['temperature']}),
{c['steps']} steps × {c['batch_size']} × {c['seq_len']} tokens of the training text. It uses the teacher's
tokenizer and vocabulary, so it can be the draft model of speculative decoding.

| model | parameters | held-out perplexity |
|---|---|---|
| teacher `{t}` | {r['teacher']['parameters']:,} | {r['teacher']['heldout_perplexity']} |
| this student (distilled) | {s['parameters']:,} | {s['heldout_perplexity']} |
| same student, labels only (not saved) | {b['parameters']:,} | {b['heldout_perplexity']} |

Perplexity on the first {r['perplexity_tokens']:,} tokens of `data/heldout.txt` (window 256, stride 128).
Measured on: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')}. Full numbers:
`distill_results.json`.
"""
