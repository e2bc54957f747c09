import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from synth2.captions.backends import OpenAIBackend, WorldBackend
from synth2.captions.classes import WordNetMissing, find_wordnet, imagenet21k_classes, load_classes
from synth2.captions.generate import CaptionsConfig, ValidationConfig, deduplicate, generate_captions, plan_items, validate
from synth2.captions.prompts import PAPER_PROMPT, fill
from synth2.errors import UserError
from synth2.world.llm import WorldLLM
from synth2.world.scene import WorldConfig, WorldSpec

from chat_server import ChatServer

SHAPES = WorldSpec(WorldConfig(), 0).shapes


def _config(**kw):
    return CaptionsConfig(n=kw.pop("n", 40), batch_size=kw.pop("batch_size", 16), **kw)


def test_prompt_is_the_papers_verbatim():
    assert fill(PAPER_PROMPT, "heart").startswith("Make up a human-annotated description of an image that contains the following object: heart.")
    assert PAPER_PROMPT.endswith('beginning with "This is an image of".')
    with pytest.raises(ValueError, match=r"\[object\]"):
        fill("no placeholder", "x")


def test_a_class_drawn_twice_gets_two_seeds():
    items = plan_items(["a", "b"], 50, seed=3)
    assert len({s for _, s in items}) == 50
    assert items == plan_items(["a", "b"], 50, seed=3)


@pytest.mark.parametrize(
    "text, reason",
    [("", "empty"), ("Sure! This is an image of a cat " + "word " * 30, "missing_prefix"), ("This is an image of a cat.", "too_short"),
     ("This is an image of " + "word " * 50, "too_long"), ("This is an image of " + "word " * 30, None)],
)
def test_validation(text, reason):
    assert validate(text, ValidationConfig()) == reason


def test_deduplicate_exact_and_near():
    captions = [
        "This is an image of a red circle on a grey background next to a blue square in the corner.",
        "this is an image of a red circle, on a grey background next to a blue square in the corner",
        "This is an image of a red circle on a grey background next to a blue square in the corner today.",
        "This is an image of a yellow star above a pink heart on a navy background with nothing else.",
    ]
    keep, counts = deduplicate(captions, threshold=0.8)
    assert keep == [0, 3] and counts == {"exact_duplicate": 1, "near_duplicate": 1}


def test_world_backend_generation_report(tmp_path):
    llm = WorldLLM(WorldSpec(WorldConfig(), 0), noise=0.3)
    report = generate_captions(WorldBackend(llm), SHAPES, _config(n=200), tmp_path / "c.jsonl", seed=0)
    lines = [json.loads(l) for l in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert report["written"] == len(lines) > 150
    assert set(report["rejected"]) <= {"missing_prefix", "too_short", "too_long"} and report["rejected"]
    assert report["duplicates"]["exact_duplicate"] + report["duplicates"]["near_duplicate"] > 0
    assert all(l["caption"].startswith("This is an image of") and l["class"] in SHAPES for l in lines)


def test_openai_backend_survives_a_misbehaving_server(tmp_path):
    with ChatServer(faulty_every=3) as server:
        backend = OpenAIBackend(server.url, "world-llm", concurrency=4, timeout=0.5, max_retries=4)
        report = generate_captions(backend, SHAPES, _config(n=60, validation=ValidationConfig(reask=0)), tmp_path / "c.jsonl", seed=0)
    assert report["unanswered"] == 0 and report["written"] >= 55
    retries = report["backend"]["retries"]
    assert retries.get("http_429") and retries.get("http_500") and retries.get("timeout")
    assert retries.get("malformed_response") and retries.get("connection")
    assert set(server.faults) == {"429", "500", "malformed", "timeout", "drop"}
    assert max(server.successes.values()) == 1  # every prompt answered once


def test_a_429_waits_as_long_as_its_retry_after_asks():
    # seed 0 is the first faulty seed, and its fault is a 429
    with ChatServer(faulty_every=1, retry_after=1.5) as server:
        backend = OpenAIBackend(server.url, "world-llm", max_retries=2)
        assert backend.complete("Make up a caption about: circle.", seed=0)
    first, second = server.times
    assert second - first >= 1.5  # the client's own backoff would have waited at most 0.5 s
    assert backend.stats.to_json() == {"requests": 1, "attempts": 2, "retries": {"http_429": 1}, "failures": {}}


def test_requests_per_minute_spaces_every_request():
    with ChatServer(faulty_every=0) as server:
        backend = OpenAIBackend(server.url, "world-llm", concurrency=4, requests_per_minute=300)  # one per 0.2 s
        answers = backend.complete_batch(["Make up a caption about: circle."] * 5, list(range(5)))
    assert all(isinstance(a, str) for a in answers)
    gaps = np.diff(sorted(server.times))
    # The server stamps arrivals, which trail the client's sends by a new connection's setup
    # (tens of ms on a busy machine), so one gap may come in short; the span cannot.
    assert len(gaps) == 4 and gaps.min() >= 0.1
    assert gaps.sum() >= 0.7


def test_openai_client_variables_and_cli_flags_reach_the_backend(monkeypatch, tmp_path):
    from synth2.captions.backends import make_backend
    from synth2.captions.generate import CaptionsConfig

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    backend = make_backend(CaptionsConfig(backend="openai", model="m", concurrency=3, timeout=7.0))
    assert str(backend.client.base_url).startswith("http://127.0.0.1:9/v1") and backend.client.api_key == "sk-test"
    assert backend.client.timeout == 7.0 and backend.concurrency == 3
    with pytest.raises(ValueError, match="captions.model"):
        make_backend(CaptionsConfig(backend="openai"))


def test_refused_connections_are_counted_and_a_rerun_completes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    backend = OpenAIBackend(dead, "world-llm", concurrency=4, timeout=0.5, max_retries=1)
    # no caption at all is an error, not an empty success; the report still says what happened
    with pytest.raises(UserError, match="no usable caption"):
        generate_captions(backend, SHAPES, _config(n=10), tmp_path / "c.jsonl", seed=0)
    report = json.loads((tmp_path / "c.jsonl.report.json").read_text())
    assert report["written"] == 0 and report["backend"]["failures"]["connection"] >= 10
    with ChatServer(faulty_every=0) as server:
        report = generate_captions(OpenAIBackend(server.url, "world-llm"), SHAPES, _config(n=10), tmp_path / "c.jsonl", seed=0)
    assert report["written"] == 10


def test_kill_9_then_resume_asks_nothing_already_answered(tmp_path):
    with ChatServer(faulty_every=0, delay=0.05) as server:
        out = tmp_path / "c.jsonl"
        cmd = [sys.executable, "-m", "synth2.cli", "captions", "--backend", "openai", "--base-url", server.url, "--model", "world-llm",
               "--n", "80", "--out", str(out), "--concurrency", "2", "--set", "captions.batch_size=8"]
        env = {**os.environ, "SYNTH2_PROGRESS": "0"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while sum(server.successes.values()) < 20 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        answered_before = sum(server.successes.values())
        assert 20 <= answered_before < 80
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = json.loads(out.with_name(out.name + ".report.json").read_text())
    # only the requests in flight at the kill (at most `concurrency`) can be asked again:
    # the server answered them, but the killed client never received the answers
    asked_twice = [key for key, count in server.successes.items() if count > 1]
    assert max(server.successes.values()) <= 2 and len(asked_twice) <= 2, "a prompt answered before the kill was asked again"
    assert report["from_cache"] >= answered_before - 2
    assert len(out.read_text().splitlines()) == report["written"] > 70


@pytest.mark.skipif(not any(os.path.exists(d + "/data.noun") for d in ("/usr/share/wordnet",)), reason="wordnet-base not installed")
def test_imagenet21k_has_10450_unique_classes():
    classes = imagenet21k_classes()
    assert len(classes) == len(set(classes)) == 10450
    assert "crane (wading bird)" in classes and "crane (lifting device)" in classes
    assert load_classes("imagenet21k") == classes


def test_missing_wordnet_is_a_clear_message(tmp_path):
    with pytest.raises(WordNetMissing, match="apt-get install wordnet-base"):
        find_wordnet(tmp_path / "nowhere")


def test_user_class_files(tmp_path):
    (tmp_path / "c.txt").write_text("cat\n# a comment\n\ndog\n")
    (tmp_path / "c.json").write_text('["cat", "dog"]')
    assert load_classes(str(tmp_path / "c.txt")) == load_classes(str(tmp_path / "c.json")) == ["cat", "dog"]
    with pytest.raises(FileNotFoundError):
        load_classes(str(tmp_path / "none.txt"))


def test_openai_base_url_comes_from_the_environment_when_unset(monkeypatch):
    from synth2.captions.backends import make_backend

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    backend = make_backend(_config(backend="openai", model="m"))
    assert str(backend.client.base_url).startswith("http://127.0.0.1:9/v1")
