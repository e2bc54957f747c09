"""scripts/compare_replicates.py: two settings trained at the same seeds, compared training by training."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parents[1] / "scripts"
_spec = importlib.util.spec_from_file_location("generator_replicates", SCRIPTS / "generator_replicates.py")
_replicates_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_replicates_script)
METRICS = _replicates_script.METRICS


def _replicates(path: Path, seen: dict[int, float]) -> Path:
    """A replicates.json whose trainings differ only in oracle_seen (every other metric 0.5)."""
    results = {str(o): {split: {m: (value if m == "oracle_seen" else 0.5) for m in METRICS} for split in "ab"} for o, value in seen.items()}
    path.write_text(json.dumps({"overrides": [], "results": results}))
    return path


def _compare(*args):
    return subprocess.run([sys.executable, str(SCRIPTS / "compare_replicates.py"), *map(str, args)], capture_output=True, text=True)


def test_paired_differences_over_the_shared_offsets_of_merged_files(tmp_path):
    before = [_replicates(tmp_path / "b1.json", {0: 0.80, 1: 0.90}), _replicates(tmp_path / "b2.json", {2: 0.85, 9: 0.1})]
    after = _replicates(tmp_path / "after.json", {0: 0.86, 1: 0.90, 2: 0.95})
    result = _compare("--before", *before, "--after", after)
    assert result.returncode == 0, result.stderr
    assert "offsets 0, 1, 2" in result.stdout  # offset 9 has no partner
    # differences +6, 0, +10: mean 5.33, standard deviation 5.03, standard error 2.91
    assert "| a | oracle_seen | 85.0 | 90.3 | +5.3 | 5.0 | 2.9 | 2 / 1 / 0 | 86.0-95.0 |" in result.stdout
    assert "| b | masked_token_nll | 0.50 | 0.50 | +0.00 | 0.00 | 0.00 | 0 / 3 / 0 | 0.50-0.50 |" in result.stdout
    assert "oracle_seen >= 90%: 2 of 3" in result.stdout and "oracle_heldout >= 70%: 0 of 3" in result.stdout


def test_settings_without_a_shared_seed_are_refused(tmp_path):
    result = _compare("--before", _replicates(tmp_path / "b.json", {0: 0.8}), "--after", _replicates(tmp_path / "a.json", {1: 0.8}))
    assert result.returncode != 0 and "share no seed offset" in result.stderr
