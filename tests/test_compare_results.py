"""scripts/compare_results.py: leaf-by-leaf comparison of two results files, timings skipped."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "compare_results.py"


def _run(tmp_path, old, new, *renames):
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    args = [sys.executable, str(SCRIPT), str(tmp_path / "old.json"), str(tmp_path / "new.json")] + [f"--rename={r}" for r in renames]
    return subprocess.run(args, capture_output=True, text=True)


OLD = {"table5": {"embedding": {"cider_a": 0.3, "steps_per_s": 7.1}}, "figure6": {"synth2_mean": [0.1, 0.2]}, "wall_seconds": 400, "seed": 0}


def test_equal_leaves_after_renames_pass_and_timings_are_skipped(tmp_path):
    new = {"table5": {"genpair": {"cider_a": 0.3, "steps_per_s": 9.9}}, "figure6": {"genpair_mean": [0.1, 0.2]}, "wall_seconds": 1, "seed": 0, "extra": 1}
    result = _run(tmp_path, OLD, new, "table5.embedding=table5.genpair", "figure6.synth2_mean=figure6.genpair_mean")
    assert result.returncode == 0, result.stdout
    assert "4 leaves equal, 0 different, 0 missing, 1 only in the new file" in result.stdout


def test_a_changed_or_missing_number_fails(tmp_path):
    new = {"table5": {"embedding": {"cider_a": 0.31}}, "figure6": {"synth2_mean": [0.1]}, "seed": 0}
    result = _run(tmp_path, OLD, new)
    assert result.returncode == 1
    assert "different: table5.embedding.cider_a: 0.3 -> 0.31" in result.stdout
    assert "missing in" in result.stdout and "figure6.synth2_mean[1]" in result.stdout
