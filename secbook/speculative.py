"""Speculative decoding: a cheap draft guesses γ tokens, the target checks them all in one forward pass.

Decoding one token at a time leaves the target model memory-bound: one pass reads all its weights to
produce one token, and checking γ+1 positions in one pass costs about the same. Leviathan et al. (2023,
"Fast Inference from Transformers via Speculative Decoding") and Chen et al. (2023, "Accelerating Large
Language Model Decoding with Speculative Sampling") let a small draft model propose γ tokens, run the target
once over them, keep the longest prefix the target agrees with, and add the target's own next token. With
greedy decoding "agrees" means "is the target's argmax", so the output is exactly the target's; with
sampling, the accept/reject rule (accept with probability min(1, p/q), otherwise resample from
norm(max(0, p − q))) keeps the target's distribution exactly. If each draft token is accepted with
probability α, a target call yields on average (1 − α^(γ+1)) / (1 − α) tokens. The α of a run is estimated
from the drafts the target actually judged (:func:`acceptance_rate`): in each call the drafts up to and
including the first rejection, never the ones after it, which are thrown away unjudged.

Prompt-lookup decoding (Saxena, 2023) needs no draft model: it proposes the tokens that followed the last
occurrence of the current n-gram in the context — strong when the output copies from the prompt (code,
edits, summaries with quotes).

Both run here over our static-cache ``StaticDecoder`` (rejected positions are simply overwritten later; the
draft can also run on the whole-step C++ decoder, ``cpp_draft=True``);
``hf_assisted`` and ``hf_prompt_lookup`` run the same ideas through transformers' ``generate``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .generate import StaticDecoder, check_supported


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """(1 − α^(γ+1)) / (1 − α): expected tokens per target call at acceptance rate α and draft length γ."""
    if not 0 <= alpha <= 1 or gamma < 0:
        raise ValueError(f"need 0 <= alpha <= 1 and gamma >= 0, got alpha={alpha}, gamma={gamma}")
    if alpha == 1:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def judged_drafts(accepted: int, proposed: int) -> int:
    """Drafts the target judged in one call: the accepted ones plus the first rejected one, if any (the drafts
    after a rejection are discarded without being judged)."""
    if not 0 <= accepted <= proposed:
        raise ValueError(f"need 0 <= accepted <= proposed, got accepted={accepted}, proposed={proposed}")
    return min(accepted + 1, proposed)


def acceptance_rate(accepted_per_call, proposed_per_call) -> float:
    """The per-draft acceptance probability α of Leviathan et al. (2023), estimated from a run: accepted drafts
    ÷ drafts judged, where a call that proposed γ drafts and accepted n judged n + 1 of them (n if n = γ).

    Each judged draft is one accept/reject trial, so this is the maximum-likelihood estimate of α under the
    paper's model (every draft accepted independently with probability α), and it is the α that
    :func:`expected_tokens_per_call` takes. Dividing by *all* drafts proposed instead would count the drafts
    after the first rejection — never looked at — as rejections, and bias α low: a draft accepted 4 times in 5
    (α = 0.8) with γ = 4 would score about 0.59 that way. 0.0 if no draft was judged (e.g. prompt lookup that
    never found a match)."""
    accepted_per_call, proposed_per_call = list(accepted_per_call), list(proposed_per_call)
    if len(accepted_per_call) != len(proposed_per_call):
        raise ValueError(f"one accepted count per call and one proposed count per call: got "
                         f"{len(accepted_per_call)} and {len(proposed_per_call)}")
    judged = sum(judged_drafts(a, p) for a, p in zip(accepted_per_call, proposed_per_call))
    return sum(accepted_per_call) / judged if judged else 0.0


def _vocab_size(model) -> int:
    """Rows of the output layer, whatever its type (``nn.Linear``, torch.ao int8, our ``QuantLinear``)."""
    head = model.get_output_embeddings()
    n = getattr(head, "out_features", None)
    return int(n) if n is not None else head.weight.shape[0]


def check_same_tokenizer(target, draft, target_tokenizer=None, draft_tokenizer=None) -> None:
    """Raise ``ValueError`` unless draft and target share a vocabulary (same tokenizer, same output size)."""
    if target_tokenizer is not None and draft_tokenizer is not None:
        if target_tokenizer.get_vocab() != draft_tokenizer.get_vocab():
            raise ValueError("the draft model's tokenizer differs from the target's: speculative decoding "
                             "compares token ids, so both must use the same tokenizer. Pick a draft trained with "
                             "the target's tokenizer (or use transformers' universal assisted generation: "
                             "generate(..., assistant_model=d, tokenizer=t, assistant_tokenizer=dt)).")
    vt, vd = _vocab_size(target), _vocab_size(draft)
    if vt != vd:
        raise ValueError(f"draft vocabulary size {vd} != target vocabulary size {vt}: the draft must use the "
                         "target's tokenizer (same token ids) for speculative decoding.")


def lookup_draft(seq: list[int], gamma: int, max_ngram: int = 3) -> list[int]:
    """Prompt lookup: the ≤ γ tokens that followed the latest earlier occurrence of the last n-gram of
    ``seq`` that has γ tokens after it (longest n first, n ≤ ``max_ngram``); ``[]`` if none occurs."""
    L = len(seq)
    for n in range(min(max_ngram, L - 1), 0, -1):
        tail, best = seq[L - n:], []
        for start in range(L - n - 1, -1, -1):  # latest occurrence first; prefer a full γ-token continuation
            if seq[start:start + n] == tail:
                cont = seq[start + n:start + n + gamma]
                if len(cont) == gamma:
                    return cont
                best = cont if len(cont) > len(best) else best
        if best:
            return best
    return []


@dataclass
class SpecResult:
    """Output ids ``[1, T + n]`` and the bookkeeping: target calls (verification passes, prefill excluded),
    draft tokens proposed and accepted, per call and in all."""
    ids: torch.Tensor
    gamma: int
    target_calls: int = 0
    draft_calls: int = 0
    proposed: int = 0
    accepted: int = 0
    accepted_per_call: list[int] = field(default_factory=list)
    proposed_per_call: list[int] = field(default_factory=list)
    prompt_len: int = 0

    @property
    def verified_tokens(self) -> int:
        """Tokens produced by the verification calls (the prefill produced one more before them)."""
        return sum(a + 1 for a in self.accepted_per_call)

    @property
    def judged(self) -> int:
        """Drafts the target judged: up to and including the first rejection in each call."""
        return sum(judged_drafts(a, p) for a, p in zip(self.accepted_per_call, self.proposed_per_call))

    @property
    def new_tokens(self) -> int:
        """Tokens in the output after the prompt."""
        return self.ids.shape[-1] - self.prompt_len

    @property
    def acceptance_rate(self) -> float:
        """α, accepted ÷ judged drafts (:func:`acceptance_rate`)."""
        return acceptance_rate(self.accepted_per_call, self.proposed_per_call)

    @property
    def tokens_per_call(self) -> float:
        """Output tokens per verification call: the new tokens after the one the prefill produced (a last call
        that ran past the requested length or past the end-of-sequence token is counted for what was kept)."""
        return max(self.new_tokens - 1, 0) / max(self.target_calls, 1)

    @property
    def expected_tokens_per_call(self) -> float:
        return expected_tokens_per_call(self.acceptance_rate, self.gamma)

    def as_dict(self) -> dict:
        return {"gamma": self.gamma, "new_tokens": self.new_tokens, "target_calls": self.target_calls,
                "draft_calls": self.draft_calls, "proposed": self.proposed, "judged": self.judged,
                "accepted": self.accepted, "acceptance_rate": self.acceptance_rate,
                "tokens_per_call": self.tokens_per_call, "expected_tokens_per_call": self.expected_tokens_per_call}


class SpeculativeDecoder:
    """Speculative decoding of ``target`` with a ``draft`` model, or prompt lookup when ``draft`` is
    ``"lookup"``. ``generate(ids, n, temperature=0)`` returns a :class:`SpecResult`. ``cpp_draft=True`` runs
    the draft on the whole-step C++ decoder (:class:`secbook.kernels.CppDecoder`; the draft must have been
    through ``apply_transform(draft, "int8k")``): a draft step then costs a small fraction of a target step,
    and the output is still exactly the target's. ``cpp_target=True`` runs the target's steps (verification
    included) on the C++ decoder as well: an fp32 target then checks γ+1 positions in about the time of one."""

    def __init__(self, target, draft="lookup", gamma: int = 4, max_len: int = 512, target_tokenizer=None,
                 draft_tokenizer=None, max_ngram: int = 3, cpp_draft: bool = False, cpp_target: bool = False):
        if gamma < 1:
            raise ValueError(f"draft length gamma must be >= 1, got {gamma}")
        check_supported(target)
        self.gamma, self.max_len, self.max_ngram = int(gamma), int(max_len), max_ngram
        self.target = self._decoder(target, cpp_target)  # C++: fp32 or "int8k" weights, the whole step one call
        if isinstance(draft, str):
            if draft != "lookup":
                raise ValueError(f"draft must be a model or 'lookup' (prompt-lookup decoding), got {draft!r}")
            self.draft = None
        else:
            check_same_tokenizer(target, draft, target_tokenizer, draft_tokenizer)
            self.draft = self._decoder(draft, cpp_draft)  # C++: the draft must be on Int8Linear ("int8k")
        self.device = next(target.parameters()).device

    def _decoder(self, model, cpp: bool):
        """A static-cache decoder for ``model`` with room for every position plus one draft run: ours in
        PyTorch, or (``cpp``) the whole-step C++ one."""
        if cpp:
            from .kernels import CppDecoder

            return CppDecoder(model, self.max_len + self.gamma + 1)
        return StaticDecoder(model, self.max_len + self.gamma + 1)

    def _fwd(self, dec: StaticDecoder, tokens: list[int], start: int) -> torch.Tensor:
        ids = torch.tensor([tokens], device=self.device)
        pos = torch.arange(start, start + len(tokens), device=self.device)
        return dec(ids, pos)[0].float()  # [len, V]

    @staticmethod
    def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
        return torch.softmax(logits / temperature, dim=-1)

    def _pick(self, logits: torch.Tensor, temperature: float, gen) -> int:
        if temperature == 0:
            return int(logits.argmax())
        return int(torch.multinomial(self._probs(logits, temperature), 1, generator=gen))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 seed: int | None = None, eos_token_id: int | None = None) -> SpecResult:
        """Prompt + up to ``max_new_tokens`` tokens, exactly ``max_new_tokens`` unless ``eos_token_id`` is given:
        then generation stops after that token, as ``model.generate`` does (the output ends with it)."""
        if input_ids.dim() == 2:
            if input_ids.shape[0] != 1:
                raise ValueError("speculative decoding here runs one sequence at a time (batch 1)")
            input_ids = input_ids[0]
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        seq = input_ids.tolist()
        T = len(seq)
        if T + max_new_tokens > self.max_len:
            raise ValueError(f"prompt ({T}) + max_new_tokens ({max_new_tokens}) exceeds max_len={self.max_len}; "
                             "build the decoder with a larger max_len.")
        gen = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        res = SpecResult(ids=input_ids, gamma=self.gamma, prompt_len=T)
        seq.append(self._pick(self._fwd(self.target, seq, 0)[-1], temperature, gen))  # prefill
        d_len = 0  # draft-cache positions that hold the right keys/values
        while len(seq) - T < max_new_tokens and (eos_token_id is None or seq[-1] != eos_token_id):
            L = len(seq)
            gamma = min(self.gamma, T + max_new_tokens - L)
            drafts, q = self._propose(seq, d_len, gamma, temperature, gen, res)
            p_logits = self._fwd(self.target, [seq[-1]] + drafts, L - 1)  # verify γ drafts in ONE pass
            res.target_calls += 1
            n, nxt = self._accept(drafts, q, p_logits, temperature, gen)
            if self.draft is not None:  # the draft fed seq and drafts[:-1]; keep what the target accepted
                d_len = L + min(n, len(drafts) - 1)
            res.proposed += len(drafts)
            res.accepted += n
            res.accepted_per_call.append(n)
            res.proposed_per_call.append(len(drafts))
            new = drafts[:n] + [nxt]
            if eos_token_id is not None and eos_token_id in new:  # stop after the end-of-sequence token
                new = new[:new.index(eos_token_id) + 1]
            seq += new
        res.ids = torch.tensor([seq[:T + max_new_tokens]], device=input_ids.device)  # where the prompt was
        return res

    def _propose(self, seq, d_len, gamma, temperature, gen, res):
        if self.draft is None:
            drafts = lookup_draft(seq, gamma, self.max_ngram)
            return drafts, None
        drafts, q = [], []
        logits = self._fwd(self.draft, seq[d_len:], d_len)[-1]
        res.draft_calls += 1
        for i in range(gamma):
            if i:
                logits = self._fwd(self.draft, [drafts[-1]], len(seq) + i - 1)[-1]
                res.draft_calls += 1
            q.append(self._probs(logits, temperature) if temperature > 0 else None)
            drafts.append(self._pick(logits, temperature, gen))
        return drafts, q

    def _accept(self, drafts, q, p_logits, temperature, gen) -> tuple[int, int]:
        """How many drafts the target accepts, and the token it adds after them."""
        if temperature == 0:
            target = p_logits.argmax(-1).tolist()
            n = 0
            while n < len(drafts) and drafts[n] == target[n]:
                n += 1
            return n, target[n]
        p = self._probs(p_logits, temperature)
        for i, d in enumerate(drafts):
            qi = q[i] if q is not None else \
                torch.nn.functional.one_hot(torch.tensor(d, device=p.device), p.shape[-1]).float()
            r = torch.rand((), generator=gen, device=p.device)
            if r < torch.clamp(p[i, d] / qi[d], max=1.0):
                continue
            resid = torch.clamp(p[i] - qi, min=0)
            resid = resid / resid.sum() if resid.sum() > 0 else p[i]
            return i, int(torch.multinomial(resid, 1, generator=gen))
        return len(drafts), int(torch.multinomial(p[len(drafts)], 1, generator=gen))


def speculative_generate(target, draft, input_ids, max_new_tokens: int, gamma: int = 4, temperature: float = 0.0,
                         seed: int | None = None, target_tokenizer=None, draft_tokenizer=None) -> SpecResult:
    """One-shot: build a :class:`SpeculativeDecoder` sized for this call and run it."""
    n = input_ids.shape[-1] + max_new_tokens
    return SpeculativeDecoder(target, draft, gamma, n, target_tokenizer, draft_tokenizer).generate(
        input_ids, max_new_tokens, temperature, seed)


def hf_assisted(target, draft, input_ids, max_new_tokens: int, gamma: int = 4) -> torch.Tensor:
    """transformers' own speculative decoding: ``generate(..., assistant_model=draft)``, γ fixed, greedy."""
    check_same_tokenizer(target, draft)
    draft.generation_config.num_assistant_tokens = gamma
    draft.generation_config.num_assistant_tokens_schedule = "constant"
    draft.generation_config.assistant_confidence_threshold = 0.0
    return target.generate(input_ids, attention_mask=torch.ones_like(input_ids), assistant_model=draft,
                           max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                           pad_token_id=target.generation_config.pad_token_id or 0)


def hf_prompt_lookup(target, input_ids, max_new_tokens: int, gamma: int = 4) -> torch.Tensor:
    """transformers' prompt-lookup decoding: ``generate(..., prompt_lookup_num_tokens=γ)``, greedy."""
    return target.generate(input_ids, attention_mask=torch.ones_like(input_ids), prompt_lookup_num_tokens=gamma,
                           max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                           pad_token_id=target.generation_config.pad_token_id or 0)


# ----------------------------------------------------------------------------- acceptance on real tasks
_FUNCTION = '''def clamp(value, low, high):
    if value < low:
        return low
    if value > high:
        return high
    return value'''
_PARAGRAPH = ("The Moon is Earth's only natural satellite. It formed about 4.5 billion years ago, probably from the "
              "debris of a collision between the young Earth and a body the size of Mars. The Moon always shows the "
              "same face to Earth because its rotation is locked to its orbit. Its gravity raises the tides in Earth's "
              "oceans, and its surface is covered with craters, dark plains of old lava called maria, and a fine grey "
              "dust.")
REAL_TASKS = {  # three kinds of chat turn: two whose reply can copy from the prompt, one that cannot
    "rewrite": f"Rewrite this function with type hints:\n\n{_FUNCTION}",
    "summarise": f"Summarise this paragraph:\n\n{_PARAGRAPH}",
    "free chat": "Tell me about the moon.",
}


def task_ids(tokenizer, prompt: str) -> torch.Tensor:
    """``prompt`` as a 1 × T tensor of ids: one user turn in the tokenizer's chat template, ready for the reply,
    or the plain text if the tokenizer has no template."""
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        return out["input_ids"]
    return tokenizer(prompt, return_tensors="pt").input_ids


def task_acceptance(target, tokenizer, drafts: dict, tasks: dict[str, str] = REAL_TASKS, gamma: int = 4,
                    max_new_tokens: int = 64):
    """Speculation on real prompts: for every task (name → prompt, sent as a chat turn) and every draft (name →
    draft model, or ``"lookup"`` for prompt lookup), one greedy speculative generation that stops at the
    tokenizer's end-of-sequence token, as a chat reply does. One row per (task, draft): new tokens, target
    calls, judged and accepted drafts, the acceptance rate α (:func:`acceptance_rate`), tokens per target call
    beside the formula's expectation at that α, and ``identical``: whether the output equals the target's own
    greedy reply from ``model.generate`` (the reference, computed once per task)."""
    import pandas as pd

    if not tasks or not drafts:
        raise ValueError("need at least one task and one draft")
    eos = tokenizer.eos_token_id
    pad = target.generation_config.pad_token_id
    ids = {name: task_ids(tokenizer, prompt) for name, prompt in tasks.items()}
    max_len = max(t.shape[-1] for t in ids.values()) + max_new_tokens
    decoders = {name: SpeculativeDecoder(target, d, gamma=gamma, max_len=max_len) for name, d in drafts.items()}
    rows = []
    for task, x in ids.items():
        ref = target.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=eos, pad_token_id=eos if pad is None else pad)
        for name, dec in decoders.items():
            r = dec.generate(x, max_new_tokens, eos_token_id=eos)
            rows.append({"task": task, "draft": name, "prompt_tokens": x.shape[-1], "new_tokens": r.new_tokens,
                         "target_calls": r.target_calls, "judged": r.judged, "accepted": r.accepted,
                         "acceptance_rate": r.acceptance_rate, "tokens_per_call": r.tokens_per_call,
                         "expected_tokens_per_call": r.expected_tokens_per_call,
                         "identical": torch.equal(r.ids, ref)})
    return pd.DataFrame(rows)


def verify_cost(target, gamma: int = 4, repeats: int = 7, context: int = 64) -> float:
    """What one verification pass costs: the median time of our decoder's forward over γ + 1 new positions ÷
    over one position, both after ``context`` cached positions. A prompt-lookup draft costs nothing to make,
    so a lookup call that yields more tokens than this ratio beats decoding one token per step."""
    from .hardware import median_seconds

    if gamma < 1 or repeats < 1 or context < 1:
        raise ValueError("gamma, repeats and context must be >= 1")
    dec = StaticDecoder(target, context + gamma + 1)
    dev = next(target.parameters()).device
    vocab = _vocab_size(target)
    g = torch.Generator().manual_seed(0)
    times = {}
    with torch.no_grad():
        dec(torch.randint(vocab, (1, context), generator=g).to(dev), torch.arange(context, device=dev))
        for n in (1, gamma + 1):
            x = torch.randint(vocab, (1, n), generator=g).to(dev)
            pos = torch.arange(context, context + n, device=dev)
            times[n] = median_seconds(lambda x=x, pos=pos: dec(x, pos), warmup=2, repeats=repeats, device=dev)
    return times[gamma + 1] / times[1]
