import pytest

from synth2.report.arm_table import seed_table


def _row(arm, seed, cider_a):
    return {"arm": arm, "seed": seed, "CIDEr_a": cider_a, "CIDEr_b": cider_a / 2}


def test_seed_table_compares_each_seed_with_the_reference_on_the_same_seed_and_means_over_seeds():
    rows = [_row("gold", 0, 2.0), _row("gold", 1, 1.0), _row("synth2", 0, 1.0), _row("synth2", 1, 1.0), _row("synth2", 2, 3.0), _row("extra", 5, 1.0)]
    table = {(r["arm"], r["seed"]): r for r in seed_table(rows, relative_to="gold")}
    assert table[("synth2", 0)]["CIDEr_a_relative"] == 0.5 and table[("synth2", 1)]["CIDEr_a_relative"] == 1.0
    assert table[("synth2", 2)]["CIDEr_a_relative"] is None  # gold never ran seed 2
    assert table[("extra", 5)]["CIDEr_a_relative"] is None and ("extra", "mean") not in table  # one seed: no mean row
    assert table[("gold", "mean")]["CIDEr_a"] == 1.5 and table[("gold", "mean")]["CIDEr_a_relative"] == 1.0
    synth2 = table[("synth2", "mean")]
    assert synth2["CIDEr_a"] == pytest.approx(5 / 3) and synth2["CIDEr_b"] == pytest.approx(5 / 6)
    assert synth2["CIDEr_a_std"] == pytest.approx(2 / 3**0.5) and synth2["seeds"] == [0, 1, 2]
    assert synth2["CIDEr_a_relative"] is None  # seed 2 has no gold to compare with


def test_a_reference_that_scored_zero_gives_no_ratio():
    table = {(r["arm"], r["seed"]): r for r in seed_table([_row("gold", 0, 0.0), _row("synth2", 0, 1.0)], relative_to="gold")}
    assert table[("synth2", 0)]["CIDEr_a_relative"] is None


def test_seed_mean_gives_each_number_its_mean_and_std_over_seeds():
    from synth2.report.results import seed_mean

    rows = [{"cider_a": 0.2, "distinct_a": 0.5}, {"cider_a": 0.4, "distinct_a": 0.5}]
    row = seed_mean(rows)
    assert row["cider_a"] == pytest.approx(0.3) and row["cider_a_std"] == pytest.approx(0.1)
    assert row["distinct_a"] == 0.5 and row["distinct_a_std"] == 0.0
    assert seed_mean(rows[:1]) == rows[0]  # one seed: no std
