import json

import pytest
from typer.testing import CliRunner

from synth2.cli import app
from synth2.eval.captioning import score_files, write_predictions, write_references

IMAGES = [101, 102, 103, 104]
REFS = [
    ["a red circle above a blue square", "red circle and blue square", "a small red disc over a big blue block"],
    ["a green star on the left", "there is a green star", "green star by itself on a black background"],
    ["two shapes, a yellow heart and a purple ring", "a yellow heart and a violet hoop", "heart and ring"],
    ["a pink cross to the right of a cyan diamond", "pink plus sign next to a turquoise rhombus", "a cross and a diamond"],
]
PREDS = ["a red circle above a blue block", "a green star", "a yellow heart and a purple ring", "a pink cross"]


@pytest.fixture
def files(tmp_path):
    return write_predictions(tmp_path / "p.json", IMAGES, PREDS), write_references(tmp_path / "r.json", IMAGES, REFS)


def test_score_cli_equals_pycocoevalcap_called_directly(files):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    result = CliRunner().invoke(app, ["score", "--predictions", str(files[0]), "--references", str(files[1])])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output.strip().splitlines()[-1])
    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in zip(IMAGES, REFS)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in zip(IMAGES, PREDS)})
    direct = {"CIDEr": Cider().compute_score(gts, res)[0], "Bleu_4": Bleu(4).compute_score(gts, res)[0][3],
              "METEOR": Meteor().compute_score(gts, res)[0], "ROUGE_L": Rouge().compute_score(gts, res)[0]}
    assert set(cli) == set(direct)
    for name, value in direct.items():
        assert cli[name] == pytest.approx(value, abs=1e-12), name


def test_cider_is_computed_over_the_whole_set(files, tmp_path):
    """Per-image CIDEr is meaningless: the IDF comes from the evaluated set's references."""
    whole = score_files(*files, metrics=("CIDEr",))["CIDEr"]
    alone = score_files(write_predictions(tmp_path / "p1.json", IMAGES[:1], PREDS[:1]), write_references(tmp_path / "r1.json", IMAGES[:1], REFS[:1]), metrics=("CIDEr",))["CIDEr"]
    assert alone != pytest.approx(whole)


def test_mismatched_files_are_clear_errors(tmp_path):
    refs = write_references(tmp_path / "r.json", IMAGES, REFS)
    with pytest.raises(ValueError, match="have no prediction"):
        score_files(write_predictions(tmp_path / "p.json", IMAGES[:2], PREDS[:2]), refs)
    with pytest.raises(ValueError, match="no references"):
        score_files(write_predictions(tmp_path / "p2.json", [999, *IMAGES], ["x", *PREDS]), refs)
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="COCO results format"):
        score_files(tmp_path / "bad.json", refs)
