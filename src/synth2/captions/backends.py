"""Caption backends behind one interface: `complete_batch(prompts, seeds, on_answer) -> answers`.

- `OpenAIBackend`: any OpenAI-compatible chat-completions server (vLLM, llama.cpp
  server, Ollama, OpenAI) through the official `openai` client; bounded concurrency,
  timeouts, retries with exponential backoff on 429/5xx/timeouts/refused
  connections/malformed bodies, a seed per request, retry counts by cause.
- `HFBackend`: a local transformers causal LM, batched generation.
- `WorldBackend`: the embedded world's LLM.

An answer is a string, or a `BackendError` when the item could not be answered (it
is counted and can be asked again on the next run; nothing is cached for it).
`on_answer(index, answer)` is called as each answer arrives, so callers can persist
it before the rest of the batch is done.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import openai
import torch


class BackendError(RuntimeError):
    pass


AnswerCallback = Callable[[int, str], None]


def _report(on_answer: AnswerCallback | None, index: int, answer: str | BackendError) -> None:
    if on_answer is not None and not isinstance(answer, BackendError):
        on_answer(index, answer)


@dataclass
class BackendStats:
    requests: int = 0
    retries: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, counter: str, cause: str) -> None:
        with self._lock:
            getattr(self, counter)[cause] += 1

    def to_json(self) -> dict:
        return {"requests": self.requests, "retries": dict(self.retries), "failures": dict(self.failures)}


@dataclass
class GenerationParams:
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 120


class WorldBackend:
    def __init__(self, llm, params: GenerationParams | None = None):
        self.llm = llm
        self.name, self.model = "world", "world-llm"
        self.params = params or GenerationParams()
        self.stats = BackendStats()

    def complete_batch(self, prompts: list[str], seeds: list[int], on_answer: AnswerCallback | None = None) -> list[str | BackendError]:
        answers: list[str | BackendError] = []
        for prompt, seed in zip(prompts, seeds):
            self.stats.requests += 1
            try:
                answers.append(self.llm.complete(prompt, seed))
            except ValueError as e:  # e.g. a class the world does not know
                self.stats.count("failures", type(e).__name__)
                answers.append(BackendError(str(e)))
            _report(on_answer, len(answers) - 1, answers[-1])
        return answers


class OpenAIBackend:
    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}

    def __init__(
        self,
        base_url: str,
        model: str,
        params: GenerationParams | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ):
        self._openai = openai
        self.name, self.model = "openai", model
        self.params = params or GenerationParams()
        # local servers (vLLM, llama.cpp) accept any key; OpenAI needs the real one
        self.client = openai.OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", timeout=timeout, max_retries=0)
        self.concurrency = concurrency
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.stats = BackendStats()

    def _cause(self, error: Exception) -> tuple[str, bool]:
        """(cause, retryable)."""
        openai = self._openai
        if isinstance(error, openai.APIStatusError):
            return f"http_{error.status_code}", error.status_code in self.RETRY_STATUS or error.status_code >= 500
        if isinstance(error, openai.APITimeoutError):
            return "timeout", True
        if isinstance(error, openai.APIConnectionError):
            return "connection", True
        if isinstance(error, (openai.APIResponseValidationError, ValueError, KeyError, TypeError, AttributeError, IndexError)):
            return "malformed_response", True
        return type(error).__name__, False

    def complete(self, prompt: str, seed: int) -> str:
        rng = random.Random(seed)
        for attempt in range(self.max_retries + 1):
            with self.stats._lock:
                self.stats.requests += 1
            try:
                response = self.client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": prompt}],
                    temperature=self.params.temperature,
                    top_p=self.params.top_p,
                    max_tokens=self.params.max_tokens,
                    seed=seed,
                )
                text = response.choices[0].message.content
                if not isinstance(text, str):
                    raise ValueError("response has no message content")
                return text
            except Exception as error:  # noqa: BLE001 - classified below
                cause, retryable = self._cause(error)
                if not retryable or attempt == self.max_retries:
                    self.stats.count("failures", cause)
                    raise BackendError(f"{cause}: {error}") from error
                self.stats.count("retries", cause)
                # exponential backoff with jitter, seeded so runs are reproducible
                time.sleep(min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + rng.random()))
        raise AssertionError("unreachable")

    def complete_batch(self, prompts: list[str], seeds: list[int], on_answer: AnswerCallback | None = None) -> list[str | BackendError]:
        def one(args):
            try:
                return self.complete(*args)
            except BackendError as e:
                return e

        answers: list[str | BackendError] = [BackendError("not asked")] * len(prompts)
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        futures = {pool.submit(one, args): i for i, args in enumerate(zip(prompts, seeds))}
        reported: set[int] = set()
        try:
            # report each answer as it lands, so a crash loses only the requests in flight
            for future in as_completed(futures):
                i = futures[future]
                answers[i] = future.result()
                reported.add(i)
                _report(on_answer, i, answers[i])
        except BaseException:
            # Ctrl-C: send nothing more, keep every answer already here, and do not wait for
            # the requests in flight
            pool.shutdown(wait=False, cancel_futures=True)
            for future, i in futures.items():
                if i not in reported and future.done() and not future.cancelled():
                    _report(on_answer, i, future.result())
            raise
        pool.shutdown()
        return answers


class HFBackend:
    """Batched sampling from a local transformers causal LM (chat template when it has one)."""

    def __init__(self, path: str | Path, params: GenerationParams | None = None, batch_size: int = 16, device: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name, self.model = "hf", str(path)
        self.params = params or GenerationParams()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # decoder-only models generate after the prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.lm = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.stats = BackendStats()

    def _format(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return prompt

    @torch.no_grad()
    def complete_batch(self, prompts: list[str], seeds: list[int], on_answer: AnswerCallback | None = None) -> list[str | BackendError]:
        answers: list[str | BackendError] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = [self._format(p) for p in prompts[start : start + self.batch_size]]
            # one seed per batch, derived from its items' seeds: reproducible for the same items
            torch.manual_seed(hash(tuple(seeds[start : start + self.batch_size])) % 2**31)
            inputs = self.tokenizer(chunk, return_tensors="pt", padding=True).to(self.device)
            out = self.lm.generate(
                **inputs,
                do_sample=self.params.temperature > 0,
                temperature=self.params.temperature if self.params.temperature > 0 else None,
                top_p=self.params.top_p,
                max_new_tokens=self.params.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            self.stats.requests += len(chunk)
            new = out[:, inputs["input_ids"].shape[1] :]
            for text in self.tokenizer.batch_decode(new, skip_special_tokens=True):
                answers.append(text.strip())
                _report(on_answer, len(answers) - 1, answers[-1])
        return answers


def make_backend(cfg, world_llm=None):
    """The backend a `CaptionsConfig` asks for; the world backend answers with `world_llm`."""
    params = GenerationParams(cfg.temperature, cfg.top_p, cfg.max_tokens)
    if cfg.backend == "world":
        if world_llm is None:
            raise ValueError("captions.backend=world needs the embedded world's LLM")
        return WorldBackend(world_llm, params)
    if cfg.backend == "openai":
        base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL", "")  # the openai client's own variable
        if not base_url or not cfg.model:
            raise ValueError("captions.backend=openai needs captions.base_url (or OPENAI_BASE_URL) and captions.model")
        return OpenAIBackend(base_url, cfg.model, params, cfg.api_key_env, cfg.concurrency, cfg.timeout, cfg.max_retries)
    if cfg.backend == "hf":
        if not cfg.model:
            raise ValueError("captions.backend=hf needs captions.model (a local model directory)")
        return HFBackend(cfg.model, params, batch_size=cfg.batch_size)
    raise ValueError(f"unknown captions.backend {cfg.backend!r}: world | openai | hf")
