"""Train the book's tiny language model from scratch on the Python standard library.

A small Llama-architecture decoder (Touvron et al., 2023) with its own byte-level BPE tokenizer
(Sennrich et al., 2016), trained with AdamW and a cosine schedule, nanoGPT-style: random windows of a
single long token stream. Everything is seeded, so the same machine gives the same model. The result is
written in Hugging Face format into a temporary folder and renamed into place only when complete, so an
interrupted run never leaves a broken model behind.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .corpus import FILE_SEPARATOR, HELDOUT_PATH, read_split
from .paths import MODELS_DIR

EOS = "<|endoftext|>"


@dataclass
class TrainConfig:
    """Everything that decides the tiny model; change a field to train a different one."""
    name: str = "tiny"
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 1000
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup: int = 50
    weight_decay: float = 0.1
    eval_every: int = 100
    eval_windows: int = 32
    seed: int = 0
    bf16_autocast: bool = True


def train_tokenizer(texts: list[str], vocab_size: int):
    """Train a byte-level BPE tokenizer and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                   unk_token=None, model_max_length=1024, padding_side="left")


def encode_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """Concatenate files into one stream of ids, an end-of-text token between files."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def make_model(cfg: TrainConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.95, as nanoGPT) with weight decay on matrices only, not on norms and biases."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def sample_batch(stream: torch.Tensor, batch: int, seq_len: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(stream) - seq_len - 1, (batch,), generator=gen)
    return torch.stack([stream[s:s + seq_len] for s in starts.tolist()])


@torch.no_grad()
def eval_loss(model, windows: torch.Tensor, autocast: bool) -> float:
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=windows, labels=windows).loss.item()
    model.train()
    return loss


def atomic_save(model, tokenizer, out_dir: Path, card: str) -> None:
    """Save into ``out_dir.tmp`` and rename it to ``out_dir`` only when every file is written."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(card)
    old = out_dir.with_name(out_dir.name + ".old")
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def train(cfg: TrainConfig | None = None, out_dir: Path | None = None, write_heldout: bool = True,
          progress: bool = True, corpus: tuple[list[str], list[str]] | None = None) -> dict:
    """Build the corpus, train tokenizer and model, save them; return a summary dict.

    ``corpus`` = (train_texts, heldout_texts) replaces the standard library (used by the tests).
    """
    from tqdm.auto import tqdm

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir) if out_dir else MODELS_DIR / cfg.name
    torch.manual_seed(cfg.seed)
    train_texts, heldout_texts = corpus if corpus is not None else read_split()
    if write_heldout:
        tmp = HELDOUT_PATH.with_suffix(".tmp")
        tmp.write_text(FILE_SEPARATOR.join(heldout_texts), encoding="utf-8")
        os.replace(tmp, HELDOUT_PATH)
    tokenizer = train_tokenizer(train_texts, cfg.vocab_size)
    stream = encode_stream(tokenizer, train_texts)
    held = encode_stream(tokenizer, heldout_texts)
    n = cfg.eval_windows * cfg.seq_len
    eval_windows = held[:n].view(cfg.eval_windows, cfg.seq_len)

    model = make_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="training", disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x = sample_batch(stream, cfg.batch_size, cfg.seq_len, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            hl = eval_loss(model, eval_windows, cfg.bf16_autocast)
            history.append({"step": step + 1, "train_loss": loss.item(), "heldout_loss": hl})
            bar.write(f"step {step + 1:5d}  train loss {loss.item():.3f}  held-out loss {hl:.3f}  "
                      f"(ppl {math.exp(hl):.1f})")
        bar.set_postfix(loss=f"{loss.item():.3f}")
    minutes = (time.perf_counter() - t0) / 60
    model.eval()

    from .measure import perplexity
    ppl = perplexity(model, tokenizer, "\n\n".join(heldout_texts))
    summary = {
        "name": cfg.name, "parameters": n_params, "train_tokens_in_corpus": len(stream),
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len, "train_minutes": round(minutes, 1),
        "heldout_perplexity": round(ppl, 2), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}", "config": asdict(cfg), "history": history,
    }
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = 64
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    atomic_save(model, tokenizer, out_dir, model_card(summary))
    (out_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def model_card(s: dict) -> str:
    c = s["config"]
    return f"""# secbook `{s['name']}` — a tiny Python-code language model

Trained from scratch by `python -m secbook train` for the secbook book. Llama architecture
({c['num_hidden_layers']} layers, hidden {c['hidden_size']}, MLP {c['intermediate_size']},
{c['num_attention_heads']} attention heads, {c['num_key_value_heads']} key/value heads, vocabulary
{c['vocab_size']} byte-level BPE, tied embeddings).

| | |
|---|---|
| parameters | {s['parameters']:,} |
| training tokens seen | {s['tokens_seen']:,} ({c['steps']} steps × {c['batch_size']} × {c['seq_len']}) |
| distinct tokens in the training corpus | {s['train_tokens_in_corpus']:,} |
| training time | {s['train_minutes']} minutes on {s['machine']} |
| held-out perplexity | {s['heldout_perplexity']} (on `data/heldout.txt`, window 256, stride 128) |

Training text: the `.py` files of CPython {platform.python_version()}'s standard library (PSF licence),
without tests, codec tables and bundled data; split by file, 1 file in 20 held out.

Reproduce: `python -m secbook train` (or `make model`), seed {c['seed']}.
"""
