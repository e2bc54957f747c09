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
    assert err.count("perceptual loss OFF") == 2 and "stage s: config or inputs changed, recomputing" in err
    assert "perceptual loss OFF" in (tmp_path / "s" / "log.txt").read_text()
