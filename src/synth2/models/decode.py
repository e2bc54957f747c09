"""Caption decoding for the VLM: greedy and beam search, batched, with the LM's KV cache.

The image's cross-attention keys and values are computed once (in the
XAttnCondition) and reused at every step; the LM's self-attention cache grows by
one token per step. Every caption in a batch shares one prompt, so no padding is
needed and positions line up.

Shape legend: B batch, K beams, T text length, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synth2.models.vlm import VLM


def _prompt_ids(vlm: VLM, prompt: str, batch: int, device) -> torch.Tensor:
    ids = [vlm.lm.bos_id] + vlm.lm.token_ids(prompt)
    return torch.tensor(ids, device=device).expand(batch, -1).contiguous()


@torch.no_grad()
def greedy(vlm: VLM, tokens_Bhw: torch.Tensor, prompt: str = "", max_new_tokens: int = 40) -> list[list[int]]:
    """Greedy decoding; returns each caption's token ids (EOS excluded)."""
    B, device = tokens_Bhw.shape[0], tokens_Bhw.device
    condition = vlm.condition(tokens_Bhw)
    ids = _prompt_ids(vlm, prompt, B, device)
    max_new_tokens = min(max_new_tokens, vlm.lm.max_length - ids.shape[1])  # the LM's position table
    mask = torch.ones_like(ids, dtype=torch.bool)
    out = vlm(ids, mask, condition=condition, use_cache=True)
    cache = vlm.cache_of(out)
    next_ids = out.logits[:, -1].argmax(-1)
    generated = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        done |= next_ids == vlm.lm.eos_id
        for i in (~done).nonzero().flatten().tolist():
            generated[i].append(int(next_ids[i]))
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.bool, device=device)], dim=1)
        out = vlm(next_ids[:, None], mask, condition=condition, cache=cache, use_cache=True)
        cache = vlm.cache_of(out)
        next_ids = out.logits[:, -1].argmax(-1)
    return generated


@torch.no_grad()
def beam_search(
    vlm: VLM, tokens_Bhw: torch.Tensor, prompt: str = "", beams: int = 3, max_new_tokens: int = 40, length_penalty: float = 1.0
) -> list[list[int]]:
    """Beam search; hypotheses are ranked by sum log p / length**length_penalty."""
    if beams == 1:
        return greedy(vlm, tokens_Bhw, prompt, max_new_tokens)
    B, device, eos = tokens_Bhw.shape[0], tokens_Bhw.device, vlm.lm.eos_id
    condition = vlm.condition(tokens_Bhw).repeat_interleave(beams)
    ids = _prompt_ids(vlm, prompt, B * beams, device)
    max_new_tokens = min(max_new_tokens, vlm.lm.max_length - ids.shape[1])
    mask = torch.ones_like(ids, dtype=torch.bool)
    out = vlm(ids, mask, condition=condition, use_cache=True)
    cache = vlm.cache_of(out)
    log_probs = F.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B*K, V)
    V = log_probs.shape[-1]
    # only the first beam of each example is live at the start
    scores = torch.full((B, beams), -float("inf"), device=device)
    scores[:, 0] = 0.0
    sequences = torch.empty(B, beams, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    for step in range(max_new_tokens):
        candidate = (scores[:, :, None] + log_probs.view(B, beams, V)).view(B, -1)  # (B, K*V)
        top_scores, top_index = candidate.topk(2 * beams, dim=1)
        beam_of, token_of = top_index // V, top_index % V
        new_scores = torch.full((B, beams), -float("inf"), device=device)
        new_beam = torch.zeros(B, beams, dtype=torch.long, device=device)
        new_token = torch.full((B, beams), eos, dtype=torch.long, device=device)
        for b in range(B):
            kept = 0
            for score, beam, token in zip(top_scores[b].tolist(), beam_of[b].tolist(), token_of[b].tolist()):
                if score == -float("inf"):
                    break
                if token == eos:
                    hypothesis = sequences[b, beam].tolist()
                    finished[b].append((score / max(len(hypothesis) + 1, 1) ** length_penalty, hypothesis))
                    continue
                new_scores[b, kept], new_beam[b, kept], new_token[b, kept] = score, beam, token
                kept += 1
                if kept == beams:
                    break
        best_live = new_scores.max(dim=1).values
        all_done = all(
            len(finished[b]) >= beams and max(s for s, _ in finished[b]) >= best_live[b].item() / max(step + 2, 1) ** length_penalty
            for b in range(B)
        )
        if all_done or step == max_new_tokens - 1:
            for b in range(B):
                for k in range(beams):
                    if new_scores[b, k] > -float("inf"):
                        hypothesis = sequences[b, new_beam[b, k]].tolist() + [int(new_token[b, k])]
                        finished[b].append((float(new_scores[b, k]) / (len(hypothesis) + 1) ** length_penalty, hypothesis))
            break
        origin = (torch.arange(B, device=device)[:, None] * beams + new_beam).view(-1)
        sequences = torch.cat([sequences.view(B * beams, -1)[origin].view(B, beams, -1), new_token[:, :, None]], dim=2)
        scores = new_scores
        cache.reorder_cache(origin)
        mask = torch.cat([mask, torch.ones(B * beams, 1, dtype=torch.bool, device=device)], dim=1)
        out = vlm(new_token.view(-1, 1), mask, condition=condition, cache=cache, use_cache=True)
        cache = vlm.cache_of(out)
        log_probs = F.log_softmax(out.logits[:, -1].float(), dim=-1)
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in finished]


def decode_texts(vlm: VLM, token_lists: list[list[int]]) -> list[str]:
    return [vlm.lm.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in token_lists]
