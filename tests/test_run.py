import json

from typer.testing import CliRunner

from synth2.cli import app
from synth2.config import tiny
from synth2.run import Run


def test_finished_stage_is_skipped_and_changed_config_reruns(tmp_path):
    calls = []

    def work(directory):
        calls.append(directory)
        (directory / "out.txt").write_text("x")
        return {"n": len(calls)}

    run = Run(tmp_path, tiny())
    a = run.stage("s", {"k": 1}, [], work)
    b = run.stage("s", {"k": 1}, [], work)
    assert len(calls) == 1 and b.skipped and b.artifacts == a.artifacts
    c = run.stage("s", {"k": 2}, [], work)
    assert len(calls) == 2 and not c.skipped and c.fingerprint != a.fingerprint
    # downstream stages see the changed fingerprint through their inputs
    d1 = run.stage("t", {}, [a], work)
    d2 = run.stage("t", {}, [c], work)
    assert d1.fingerprint != d2.fingerprint
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stages"]["s"]["status"] == "done" and "seconds" in manifest["stages"]["s"]
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "s" / "log.txt").exists()



def test_fields_added_at_their_defaults_keep_the_stage_and_a_change_names_its_keys(tmp_path, capsys, monkeypatch):
    from dataclasses import dataclass, field

    from synth2.progress import console

    monkeypatch.setattr(console, "width", 400)  # one line per message

    @dataclass
    class Before:
        steps: int = 10
        weights: dict = field(default_factory=dict)

    @dataclass
    class After(Before):  # what a newer synth2 adds, off by default
        average_from: int = 0
        schedule: list = field(default_factory=lambda: ["cosine"])

    calls = []

    def work(directory):
        calls.append(directory)
        return {"n": len(calls)}

    run = Run(tmp_path, tiny())
    a = run.stage("s", {"t2i": Before(steps=20, weights={2: 2.0}), "seed": 0}, [], work)
    down = run.stage("t", {}, [a], work)
    b = run.stage("s", {"t2i": After(steps=20, weights={2: 2.0}), "seed": 0}, [], work)
    assert b.skipped and b.fingerprint == a.fingerprint and len(calls) == 2
    assert run.stage("t", {}, [b], work).fingerprint == down.fingerprint and len(calls) == 2
    # a new field away from its default, or an old one changed, is a change, and the warning names it
    c = run.stage("s", {"t2i": After(steps=20, weights={2: 2.0}, average_from=5), "seed": 0}, [], work)
    assert not c.skipped and len(calls) == 3
    d = run.stage("s", {"t2i": After(steps=30, weights={2: 2.0}, average_from=5), "seed": 0}, [], work)
    assert not d.skipped and len(calls) == 4
    err = capsys.readouterr().err
    assert "stage s: config or inputs changed (config.t2i.average_from), recomputing" in err
    assert "stage s: config or inputs changed (config.t2i.steps), recomputing" in err



def test_a_stage_built_before_a_field_of_the_real_config_existed_is_kept(tmp_path):
    """The generator's section as a run built before `t2i.average_from` stored it: the stage is kept."""
    calls = []
    cfg = tiny()
    run = Run(tmp_path, cfg)
    built = run.stage("t2i", {"t2i": cfg.t2i, "seed": cfg.seed}, [], lambda d: calls.append(d) or {})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = manifest["stages"]["t2i"]
    del entry["payload"]["config"]["t2i"]["average_from"]
    entry["fingerprint"] = "built-before"  # the hash of that payload, which the field's addition changed
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    kept = run.stage("t2i", {"t2i": cfg.t2i, "seed": cfg.seed}, [], lambda d: calls.append(d) or {})
    assert kept.skipped and kept.fingerprint == "built-before" != built.fingerprint and len(calls) == 1

def test_a_manifest_without_payloads_is_still_read_and_gains_them(tmp_path):
    calls = []

    def work(directory):
        calls.append(directory)
        return {}

    run = Run(tmp_path, tiny())
    a = run.stage("s", {"k": 1}, [], work)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["stages"]["s"]["payload"]  # as runs built before payloads were kept
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert run.stage("s", {"k": 1}, [], work).fingerprint == a.fingerprint and len(calls) == 1
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"]["s"]["payload"]["config"] == {"k": 1}
    assert not run.stage("s", {"k": 2}, [], work).skipped and len(calls) == 2

def test_a_moved_run_directory_still_finds_its_artifacts(tmp_path):
    import shutil

    def work(directory):
        (directory / "model.bin").write_text("weights")
        return {"path": str(directory / "model.bin"), "files": [directory / "model.bin"], "name": "kept as is"}

    Run(tmp_path / "a", tiny()).stage("s", {}, [], work)
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = Run(tmp_path / "b", tiny()).stage("s", {}, [], work)
    assert moved.skipped
    assert moved.artifacts["path"] == str(tmp_path / "b" / "s" / "model.bin")
    assert moved.artifacts["files"] == [str(tmp_path / "b" / "s" / "model.bin")]
    assert moved.artifacts["name"] == "kept as is"


def test_interrupted_stage_is_called_again_with_its_folder_kept(tmp_path):
    run = Run(tmp_path, tiny())

    def crash(directory):
        (directory / "partial").write_text("progress")
        raise KeyboardInterrupt

    try:
        run.stage("s", {}, [], crash)
    except KeyboardInterrupt:
        pass
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"]["s"]["status"] == "running"
    seen = {}

    def resume(directory):
        seen["partial"] = (directory / "partial").read_text()
        return {}

    run.stage("s", {}, [], resume)
    assert seen["partial"] == "progress"


def test_cli_world_then_inspect_shows_skew_and_heldout(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["world", "--preset", "tiny", "--out", str(tmp_path / "w"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "w"), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    splits = stats["splits"]
    assert splits["paired"]["heldout_combination_objects"] == 0
    assert splits["eval_a"]["heldout_combination_objects"] > 0 and splits["eval_b"]["heldout_combination_objects"] > 0
    assert splits["paired"]["top3_class_share"] > splits["eval_a"]["top3_class_share"]
    assert (tmp_path / "w" / "paired" / "inspect.png").exists()
    assert splits["eval_a"]["references_per_record"]["mean"] == 5


def test_cli_reports_bad_override_clearly(tmp_path):
    result = CliRunner().invoke(app, ["world", "--preset", "tiny", "--out", str(tmp_path), "--set", "world.nope=1"])
    assert result.exit_code != 0
    assert "world.nope" in str(result.exception)


def test_every_command_has_help():
    from typer.main import get_command

    root = get_command(app)
    runner = CliRunner()

    def walk(command, path):
        result = runner.invoke(app, path + ["--help"])
        assert result.exit_code == 0, path
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, path + [name])

    walk(root, [])


def test_warnings_that_change_results_reach_the_console(tmp_path, capsys, monkeypatch):
    import logging

    from synth2.progress import console

    monkeypatch.setattr(console, "width", 400)  # one line per message

    def work(directory):
        logging.getLogger("synth2").warning("vq: perceptual loss OFF: no local LPIPS weights")
        return {}

    run = Run(tmp_path, tiny())
    run.stage("s", {"k": 1}, [], work)
    run.stage("s", {"k": 2}, [], work)
    err = capsys.readouterr().err
    assert err.count("perceptual loss OFF") == 2 and "stage s: config or inputs changed (config.k), recomputing" in err
    assert "perceptual loss OFF" in (tmp_path / "s" / "log.txt").read_text()
