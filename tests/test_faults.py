"""Faults a run directory meets on a bad day: planted pickles, two writers, truncated or garbage
files, empty inputs. Each ends in one clear line, and nothing good is lost."""

import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from synth2.cli import main
from synth2.config import TrainConfig, tiny
from synth2.errors import UserError
from synth2.run import STAGE_VERSION, Run, fingerprint
from synth2.train import checkpoint
from synth2.train.distributed import DistInfo
from synth2.train.loop import train


def _task(lm_dir):
    from test_t2i import _t2i_task

    return _t2i_task(lm_dir)


class _Planted:
    """A pickle whose loading would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_in_a_checkpoint_runs_nothing_and_is_set_aside(tiny_llama_dir, tmp_path, caplog):
    task, cfg = _task(tiny_llama_dir)
    train(task, cfg.train, tmp_path / "run", DistInfo(), "t2i", stop_after=6)  # checkpoints at 3 and 6
    marker = tmp_path / "pwned"
    newest = tmp_path / "run" / "checkpoints" / "step-6"
    (newest / "rng.pt").write_bytes(pickle.dumps(_Planted(marker), protocol=2))
    with caplog.at_level(logging.WARNING):
        resumed, _ = _task(tiny_llama_dir)
        train(resumed, cfg.train, tmp_path / "run", DistInfo(), "t2i")
    assert not marker.exists()
    assert str(newest / "rng.pt") in caplog.text  # the warning names the file
    assert (newest.parent / "step-6.corrupt").is_dir()  # set aside; step 3 was used, and step 6 written again
    assert (newest / "rng.pt").exists() and torch.load(newest / "rng.pt", weights_only=True)


def test_a_truncated_checkpoint_falls_back_to_the_one_before(tiny_llama_dir, tmp_path):
    task, cfg = _task(tiny_llama_dir)
    whole = train(task, cfg.train, tmp_path / "whole", DistInfo(), "t2i")
    task, _ = _task(tiny_llama_dir)
    train(task, cfg.train, tmp_path / "cut", DistInfo(), "t2i", stop_after=6)
    weights = tmp_path / "cut" / "checkpoints" / "step-6" / "t2i.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(checkpoint.CorruptCheckpoint, match="t2i.safetensors"):
        checkpoint.load(weights.parent, {"t2i": _task(tiny_llama_dir)[0].model})
    resumed, _ = _task(tiny_llama_dir)
    again = train(resumed, cfg.train, tmp_path / "cut", DistInfo(), "t2i")
    # resumed from step 3, which the run before wrote: the same numbers as one uninterrupted run
    assert again.last_metrics == whole.last_metrics


class _SlowTask:
    """One parameter; every step takes 20 ms, so training time is known."""

    def __init__(self):
        self.weight = torch.nn.Linear(1, 1)
        self.modules = {"model": self.weight}
        self.optimizers = {"model": torch.optim.SGD(self.weight.parameters(), lr=0.1)}

    def batch(self, step):
        return torch.ones(2, 1)

    def step(self, batch, step, ctx):
        time.sleep(0.02)
        loss = self.weight(batch).pow(2).mean()
        ctx.update(loss, self.optimizers["model"])
        return {"loss": loss.item()}


def test_a_resumed_run_counts_the_training_time_before_the_stop(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=2, lr=0.1, warmup=1, checkpoint_every=5, log_every=5)
    train(_SlowTask(), cfg, tmp_path / "run", DistInfo(), "slow", stop_after=5)
    resumed = train(_SlowTask(), cfg, tmp_path / "run", DistInfo(), "slow")
    assert resumed.timed_steps == 10
    assert resumed.seconds >= 10 * 0.02  # both halves: the half before the stop came from the checkpoint
    assert resumed.steps_per_s <= 1 / 0.02


def test_a_checkpoint_without_its_training_time_times_only_the_steps_after_it(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=2, lr=0.1, warmup=1, checkpoint_every=5, log_every=1)
    train(_SlowTask(), cfg, tmp_path / "run", DistInfo(), "slow", stop_after=5)
    state_file = tmp_path / "run" / "checkpoints" / "step-5" / "state.json"
    state = json.loads(state_file.read_text())
    del state["train_seconds"]
    state_file.write_text(json.dumps(state))
    train(_SlowTask(), cfg, tmp_path / "run", DistInfo(), "slow", stop_after=8)  # its checkpoint at 8 times steps 5-8
    resumed = train(_SlowTask(), cfg, tmp_path / "run", DistInfo(), "slow")
    assert resumed.timed_steps == 5  # the rate is over the steps timed, 5 to 10, not all ten
    assert resumed.seconds >= 5 * 0.02


def _stage_holder(run_dir, stage):
    """A process that takes the lock of `stage` in `run_dir` and keeps it for a minute."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from synth2.config import tiny; from synth2.run import Run; "
         "Run(sys.argv[1], tiny()).lock_stage(sys.argv[2]); print('held', flush=True); time.sleep(60)", str(run_dir), stage],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def _train_lm(run_dir):
    return subprocess.run([sys.executable, "-m", "synth2.cli", "train", "lm", "--run", str(run_dir), "--preset", "tiny"],
                          capture_output=True, text=True, timeout=300)


def test_a_second_writer_of_a_stage_stops_at_once_naming_the_holder(tmp_path):
    holder = _stage_holder(tmp_path, "world")
    try:
        second = _train_lm(tmp_path)  # its first stage is the world's
        assert second.returncode == 2
        assert f"PID {holder.pid}" in second.stderr and "stage world" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "world").exists()  # it wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the kernel drops the lock with its holder, however it ended
    Run(tmp_path, tiny()).lock_stage("world")


def test_a_worker_waits_for_a_stage_another_process_writes_then_builds_it_once_the_writer_is_gone(tmp_path):
    holder = _stage_holder(tmp_path, "world")
    threading.Timer(1.0, holder.kill).start()
    built = []
    result = Run(tmp_path, tiny(), wait_for_writers=True).stage("world", {}, [], lambda directory: built.append(directory) or {"n": 1})
    holder.wait()
    assert built == [tmp_path / "world"] and result.artifacts == {"n": 1} and not result.skipped


def test_a_worker_waiting_for_a_stage_takes_it_as_done_when_the_writer_finishes_it(tmp_path):
    holder = _stage_holder(tmp_path, "world")
    run = Run(tmp_path, tiny(), wait_for_writers=True)
    fp = fingerprint({"stage": "world", "version": STAGE_VERSION, "config": {}, "inputs": {}})
    finish = threading.Timer(1.0, lambda: run._update_stage("world", fingerprint=fp, status="done", artifacts={"n": 2}))
    finish.start()
    try:
        result = run.stage("world", {}, [], lambda directory: pytest.fail("built a stage another process finished"))
    finally:
        holder.kill()
        holder.wait()
    assert result.skipped and result.artifacts == {"n": 2}


def test_a_failing_worker_stops_the_others_and_its_error_reaches_the_caller(tmp_path):
    from synth2.experiments.parallel import build_in_parallel

    run = Run(tmp_path, tiny())
    started = time.time()
    with pytest.raises(UserError, match="stage broken: bad record"):
        # the second target would wait a minute for a stage the first one leaves unfinished
        build_in_parallel(run, [(_broken_stage, ()), (_stage_waiting_for_broken, ())], jobs=2)
    assert time.time() - started < 30


def test_a_killed_worker_stops_the_others_with_one_line_saying_to_rerun(tmp_path):
    from synth2.experiments.parallel import build_in_parallel

    started = time.time()
    with pytest.raises(RuntimeError, match="a worker process died"):
        build_in_parallel(Run(tmp_path, tiny()), [(_killed_stage, ()), (_stage_waiting_for_broken, ())], jobs=2)
    assert time.time() - started < 30


def _killed_stage(run):
    def die(directory):
        os.kill(os.getpid(), signal.SIGKILL)

    return run.stage("broken", {}, [], die)


def _broken_stage(run):
    def fail(directory):
        raise UserError("stage broken: bad record")

    return run.stage("broken", {}, [], fail)


def _stage_waiting_for_broken(run):
    time.sleep(2)  # the broken stage is claimed by then; a worker's run waits for it
    return run.stage("broken", {}, [], lambda directory: time.sleep(60) or {})


def test_processes_write_different_stages_of_one_run_at_once(tmp_path):
    holder = _stage_holder(tmp_path, "vlm/baseline")  # as a process training one arm would
    try:
        second = _train_lm(tmp_path)
        assert second.returncode == 0, second.stderr
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"]["lm"]["status"] == "done"


_MANY_STAGES = """
import sys
from synth2.config import tiny
from synth2.run import Run
run = Run(sys.argv[1], tiny())
for k in range(60):
    run.stage(f"{sys.argv[2]}/{k}", {}, [], lambda directory, k=k: {"k": k})
"""


def test_manifest_entries_written_by_processes_at_once_are_all_kept(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", _MANY_STAGES, str(tmp_path), name]) for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert sorted(stages) == sorted(f"{name}/{k}" for name in ("a", "b") for k in range(60))
    assert all(entry["status"] == "done" for entry in stages.values())


def test_a_garbage_manifest_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "lm", "--run", str(tmp_path), "--preset", "tiny"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "manifest.json") in err and "Traceback" not in err


@pytest.mark.parametrize(
    "predictions, references, says",
    [
        ([], {"images": [], "annotations": []}, "no predictions"),
        ([{"image_id": 1, "caption": "a cat"}], {"images": [], "annotations": []}, "no reference captions"),
        ([{"image_id": 1, "caption": None}], {"images": [{"id": 1}], "annotations": [{"image_id": 1, "id": 0, "caption": "a cat"}]}, "record 0"),
    ],
)
def test_score_refuses_empty_or_captionless_files_at_once(tmp_path, capsys, predictions, references, says):
    p, r = tmp_path / "p.json", tmp_path / "r.json"
    p.write_text(json.dumps(predictions))
    r.write_text(json.dumps(references))
    began = time.time()
    with pytest.raises(SystemExit) as exit_:
        main(["score", "--predictions", str(p), "--references", str(r)])
    assert exit_.value.code == 2 and time.time() - began < 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(Exception, match="manifest.json"):
        main(["--debug", "train", "lm", "--run", str(tmp_path), "--preset", "tiny"])


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_stops_at_once_and_keeps_every_answer(tmp_path, signum, code):
    from chat_server import ChatServer

    with ChatServer(faulty_every=0, delay=0.2) as server:
        out = tmp_path / "c.jsonl"
        cmd = [sys.executable, "-m", "synth2.cli", "captions", "--backend", "openai", "--base-url", server.url, "--model", "world-llm",
               "--n", "60", "--out", str(out), "--set", "captions.concurrency=4", "--set", "captions.batch_size=20"]
        env = {**os.environ, "SYNTH2_PROGRESS": "0"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while sum(server.successes.values()) < 6 and time.time() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signum)
        sent = time.time()
        proc.wait(timeout=30)
        stopped_after = time.time() - sent
        requests_at_stop = sum(server.attempts.values())
        answered = sum(server.successes.values())
        assert proc.returncode == code and stopped_after < 2
        assert "rerun the same command to resume" in proc.stderr.read()
        time.sleep(0.5)
        assert sum(server.attempts.values()) <= requests_at_stop + 4  # nothing new sent after the stop (4 were in flight)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # every answer that reached the client before the stop came from its cache on the rerun
    asked_twice = [key for key, count in server.successes.items() if count > 1]
    assert len(asked_twice) <= 4, "answers received before the stop were asked again"
    assert answered >= 6 and len(out.read_text().splitlines()) > 50


@pytest.mark.parametrize("key, value", [("lm.path", "/no/such/lm"), ("data.paired", "/no/such/shards")])
def test_a_wrong_path_fails_before_any_stage_runs(tmp_path, capsys, key, value):
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--preset", "tiny", "--out", str(tmp_path / "run"), "--set", f"{key}={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and value in err
    assert not (tmp_path / "run" / "manifest.json").exists()  # no stage ran


@pytest.mark.parametrize("key", ["lm.path", "vq.pretrained", "vq.lpips_path", "eval.inception_path", "captions.classes"])
def test_a_path_that_holds_the_wrong_thing_fails_before_any_stage_runs(tmp_path, capsys, key):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--preset", "tiny", "--out", str(tmp_path / "run"), "--set", f"{key}={empty}"])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert key in err and "is not what it should be" in err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_asking_for_cuda_without_it_fails_before_any_stage_runs(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--preset", "paper", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def test_more_world_colours_than_the_codebooks_hold_fails_before_any_stage_runs(tmp_path, capsys):
    from synth2 import api
    from synth2.world.vocab import COLOURS

    colours = f"world.colours=[{','.join(COLOURS)}]"
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--preset", "tiny", "--out", str(tmp_path / "run"), "--set", colours])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vq.model.product_codebooks" in err and f"{len(COLOURS)} colours" in err
    assert not (tmp_path / "run" / "manifest.json").exists()
    # the setting the line names is accepted
    fitting = re.search(r"vq\.model\.product_codebooks=(\[[\d,]+\])", err).group(1)
    run = api.open_run(tmp_path / "fitting", preset="tiny", overrides=[colours, f"vq.model.product_codebooks={fitting}"])
    assert run.config.vq.model.product_codebooks[2] == len(COLOURS) + 2
