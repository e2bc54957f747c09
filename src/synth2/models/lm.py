"""The frozen language model: one adapter over any Hugging Face causal LM.

Real models (GPT-2, Llama, Qwen, Mistral, ...) load from a local directory; the
embedded default is a small Llama built from a config with a BPE tokenizer trained
by `tokenizers` on the world's text, and saved the same way, so one code path
serves both. The adapter gives what the generator and the VLM need:

- `tokenize(texts)`: ids and mask, with BOS prepended and (optionally) EOS appended;
- `text_states(ids, mask, layer)`: the hidden states of one layer, for conditioning the generator;
- `decoder_layers`, `hidden_size`: where the VLM's gated cross-attention attaches.

Shape legend: B batch, L text length, D hidden width, V vocabulary.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# model loading/saving progress bars would interleave with synth2's own
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

SPECIAL_TOKENS = {"pad_token": "<|pad|>", "bos_token": "<|bos|>", "eos_token": "<|eos|>", "unk_token": "<|unk|>"}


@dataclass
class EmbeddedLMConfig:
    architecture: Literal["llama", "gpt2"] = "llama"
    vocab_size: int = 1024
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 384
    max_length: int = 96


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (the stand-in for a pre-trained LM's tokenizer)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def build_embedded_lm(cfg: EmbeddedLMConfig, tokenizer: PreTrainedTokenizerFast) -> nn.Module:
    """A small causal LM built from a config (random weights), sized to the tokenizer."""
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if cfg.architecture == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden,
            intermediate_size=cfg.intermediate,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            num_key_value_heads=cfg.heads,
            max_position_embeddings=cfg.max_length,
            tie_word_embeddings=True,
            **ids,
        )
        return LlamaForCausalLM(config)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=cfg.hidden, n_layer=cfg.layers, n_head=cfg.heads, n_positions=cfg.max_length, **ids
    )
    return GPT2LMHeadModel(config)


class FrozenLM(nn.Module):
    def __init__(self, model: nn.Module, tokenizer, max_length: int = 64):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        # never longer than the model's position table (a small local model may have fewer than asked)
        positions = getattr(model.config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, positions)
        if tokenizer.pad_token_id is None:
            # GPT-2-style tokenizers have no pad token; padded positions are masked anyway
            tokenizer.pad_token = tokenizer.eos_token
        self.model.requires_grad_(False)
        self.model.eval()
        # the KV cache's keyword in the LM's forward and outputs: transformers 5 renamed
        # `past_key_values` to `cache` (the old name warns and is going away)
        self.cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @classmethod
    def from_pretrained(cls, path: str | Path, max_length: int = 64, dtype: torch.dtype = torch.float32) -> "FrozenLM":
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: not a Hugging Face model directory (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return cls(model, tokenizer, max_length)

    def train(self, mode: bool = True) -> "FrozenLM":
        # frozen: stays in eval mode (no dropout) whatever its parent does
        super().train(False)
        return self

    # structure -------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    @property
    def decoder_layers(self) -> nn.ModuleList:
        """The decoder blocks, found generically (model.layers, transformer.h, gpt_neox.layers, ...)."""
        decoder = self.model.get_decoder()
        n = self.model.config.num_hidden_layers
        for module in decoder.children():
            if isinstance(module, nn.ModuleList) and len(module) == n:
                return module
        raise ValueError(f"cannot find the decoder layer list of {type(self.model).__name__}")

    @property
    def bos_id(self) -> int:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    # text --------------------------------------------------------------------
    def token_ids(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens."""
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def tokenize(self, texts: list[str], add_eos: bool = False, max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, L), mask (B, L)): BOS + text (+ EOS), right-padded, truncated to max_length."""
        max_length = max_length or self.max_length
        rows = []
        for text in texts:
            ids = [self.bos_id] + self.token_ids(text)
            ids = ids[: max_length - int(add_eos)]
            if add_eos:
                ids.append(self.eos_id)
            rows.append(ids)
        width = max(len(r) for r in rows)
        ids_BL = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask_BL = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids_BL[i, : len(row)] = torch.tensor(row)
            mask_BL[i, : len(row)] = True
        return ids_BL, mask_BL

    @torch.no_grad()
    def text_states(self, ids_BL: torch.Tensor, mask_BL: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Hidden states (B, L, D) of the frozen LM: `hidden_states[layer]` of a Hugging Face
        forward (0: the token embeddings; -1: the last layer's, normed).

        A layer below the top is the input of decoder layer `layer`, so the forward stops there
        and the layers above it never run (the generator reads layer 0: without the stop, every
        caption it draws or trains on ran the whole LM for nothing)."""
        device = self.model.get_input_embeddings().weight.device
        inputs = {"input_ids": ids_BL.to(device), "attention_mask": mask_BL.to(device)}
        layers = self.decoder_layers
        index = layer % (len(layers) + 1)
        if index == len(layers):
            return self.model(**inputs, output_hidden_states=True).hidden_states[index].float()
        captured: list[torch.Tensor] = []

        def stop(module, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _ForwardStopped

        # prepended: the input as the forward records it, before any other hook (the VLM's) acts
        handle = layers[index].register_forward_pre_hook(stop, with_kwargs=True, prepend=True)
        try:
            self.model(**inputs)
        except _ForwardStopped:
            pass
        finally:
            handle.remove()
        return captured[0].float()

    def encode_texts(self, texts: list[str], layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(texts)
        return self.text_states(ids, mask, layer), mask

    def save(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


class _ForwardStopped(Exception):
    """Raised by `FrozenLM.text_states`' hook once it holds the layer it reads."""


class CaptionStates:
    """The frozen LM's hidden states of a fixed caption list, looked up by index.

    A frozen LM gives the same states every epoch, so with `cache` (the default) they are
    computed once and a trainer that revisits its captions does not run the LM at every
    step. The cache costs captions x tokens x width floats; turn it off for corpora that do
    not fit, and each lookup runs the LM.
    """

    def __init__(self, lm: FrozenLM, texts: list[str], cache: bool = True, batch_size: int = 256, layer: int = -1):
        self.lm, self.texts, self.layer = lm, texts, layer
        self.rows: list[torch.Tensor] | None = None
        if cache:
            self.rows = []
            for start in range(0, len(texts), batch_size):
                states, mask = lm.encode_texts(texts[start : start + batch_size], layer)
                # one tensor per text, trimmed to its tokens, so no padded batch stays alive
                self.rows += [row[:n].clone() for row, n in zip(states, mask.sum(1).tolist())]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (B, L, D), mask (B, L)) of the texts at `indices`, right-padded."""
        if self.rows is None:
            return self.lm.encode_texts([self.texts[i] for i in indices], self.layer)
        rows = [self.rows[i] for i in indices]
        states = rows[0].new_zeros(len(rows), max(len(r) for r in rows), rows[0].shape[-1])  # on the LM's device
        mask = torch.zeros(states.shape[:2], dtype=torch.bool, device=states.device)
        for i, row in enumerate(rows):
            states[i, : len(row)] = row
            mask[i, : len(row)] = True
        return states, mask
