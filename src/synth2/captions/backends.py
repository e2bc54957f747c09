"""Caption backends behind one interface: `complete_batch(prompts, seeds, on_answer) -> answers`.

- `OpenAIBackend`: any OpenAI-compatible chat-completions server (vLLM, llama.cpp
  server, Ollama, OpenAI) through the official `openai` client and its retries (honouring
  `Retry-After`); bounded concurrency, timeouts, a requests-per-minute limit, re-asking
  malformed bodies, a seed per request, retry counts by cause.
- `HFBackend`: a local transformers causal LM, batched generation.
- `WorldBackend`: the embedded world's LLM.

An answer is a string, or a `BackendError` when the item could not be answered (it
is counted and can be asked again on the next run; nothing is cached for it).
`on_answer(index, answer)` is called as each answer arrives, so callers can persist
it before the rest of the batch is done.
"""

from __future__ import annotations

import importlib
import os
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
    """`requests`: items asked; `attempts`: HTTP requests sent (retries included); `errors`:
    failed attempts by cause; `failures`: items given up, by cause. Retries by cause are the
    errors that were followed by another attempt (every failure ended in one error)."""

    requests: int = 0
    attempts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, counter: str, cause: str) -> None:
        with self._lock:
            getattr(self, counter)[cause] += 1

    def to_json(self) -> dict:
        retries = +(self.errors - self.failures)
        return {"requests": self.requests, "attempts": self.attempts["all"], "retries": dict(retries), "failures": dict(self.failures)}


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


class RateLimit:
    """At most `per_minute` requests a minute, spaced evenly, across threads (0 = no limit)."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.next_slot = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
        time.sleep(max(0.0, slot - now))


# The HTTP library the openai client is built on: httpx up to openai 2, httpx2 from openai 3.
http = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])


class _CountingTransport(http.HTTPTransport):
    """Every HTTP attempt the openai client makes (its own retries included): rate-limited, and
    counted by outcome. The client's retry loop has no hook of its own for either."""

    def __init__(self, stats: "BackendStats", limit: RateLimit, **kwargs):
        super().__init__(**kwargs)
        self.stats, self.limit = stats, limit

    def handle_request(self, request):
        self.limit.wait()
        self.stats.count("attempts", "all")
        try:
            response = super().handle_request(request)
        except http.TimeoutException:
            self.stats.count("errors", "timeout")
            raise
        except http.TransportError:
            self.stats.count("errors", "connection")
            raise
        if response.status_code >= 400:
            self.stats.count("errors", f"http_{response.status_code}")
        return response


class OpenAIBackend:
    """The openai client retries 408/409/429/5xx, timeouts and dropped connections itself, waiting
    as the server's `Retry-After` asks (else exponential backoff with jitter); a body that is not
    a chat completion is re-asked here, up to as many times."""

    def __init__(
        self,
        base_url: str | None,
        model: str,
        params: GenerationParams | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 6,
        requests_per_minute: float = 0.0,
    ):
        self._openai = openai
        self.name, self.model = "openai", model
        self.params = params or GenerationParams()
        self.stats = BackendStats()
        transport = _CountingTransport(self.stats, RateLimit(requests_per_minute), limits=http.Limits(max_connections=2 * concurrency))
        # base_url None: the client reads OPENAI_BASE_URL; local servers (vLLM, llama.cpp) accept any key
        self.client = openai.OpenAI(
            base_url=base_url or None, api_key=os.environ.get(api_key_env) or "EMPTY", timeout=timeout, max_retries=max_retries,
            http_client=openai.DefaultHttpxClient(transport=transport),
        )
        self.concurrency, self.max_retries = concurrency, max_retries

    def _cause(self, error: Exception) -> str:
        openai = self._openai
        if isinstance(error, openai.APIStatusError):
            return f"http_{error.status_code}"
        if isinstance(error, openai.APITimeoutError):
            return "timeout"
        if isinstance(error, openai.APIConnectionError):
            return "connection"
        return type(error).__name__

    def complete(self, prompt: str, seed: int) -> str:
        with self.stats._lock:
            self.stats.requests += 1
        for attempt in range(self.max_retries + 1):
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
            except openai.APIError as error:
                if not isinstance(error, openai.APIResponseValidationError):  # the client retried it already
                    cause = self._cause(error)
                    self.stats.count("failures", cause)
                    raise BackendError(f"{cause}: {error}") from error
                malformed = error
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:  # a body that is not a completion
                malformed = error
            self.stats.count("errors", "malformed_response")
            if attempt == self.max_retries:
                self.stats.count("failures", "malformed_response")
                raise BackendError(f"malformed_response: {malformed}") from malformed
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
        if not cfg.model:
            raise ValueError("captions.backend=openai needs captions.model (and captions.base_url, or OPENAI_BASE_URL, for a server other than OpenAI's)")
        return OpenAIBackend(cfg.base_url, cfg.model, params, cfg.api_key_env, cfg.concurrency, cfg.timeout, cfg.max_retries, cfg.requests_per_minute)
    if cfg.backend == "hf":
        if not cfg.model:
            raise ValueError("captions.backend=hf needs captions.model (a local model directory)")
        return HFBackend(cfg.model, params, batch_size=cfg.batch_size)
    raise ValueError(f"unknown captions.backend {cfg.backend!r}: world | openai | hf")
