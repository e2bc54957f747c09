"""The whole pipeline on the tiny preset: every stage, the results file, the report, and resume."""

import importlib.util
import json
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from synth2.cli import app
from synth2.data.arrays import load_pairs
from synth2.experiments.parallel import threads_per_job
from synth2.experiments.reproduce import last_quarter_gain
from synth2.hardware import describe as describe_hardware
from synth2.world.scene import Obj, Scene

COMPARE = Path(__file__).parents[1] / "scripts" / "compare_results.py"

REQUIRED = {
    "preset", "seed", "seeds", "wall_seconds", "compute_seconds", "table2", "table3", "table5", "controls", "figure6", "generator", "vq", "curation",
}


@contextmanager
def _workers_threads():
    """Train here with the torch threads each of tiny_run's two workers had, so that what is
    trained here can equal what they trained, bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_job(2))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(app, ["reproduce", "--preset", "tiny", "--out", str(out), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    return out


def test_the_last_quarter_gain_reads_the_curve_from_three_quarters_of_the_steps_to_the_end():
    steps = [250, 500, 750, 1000, 1250, 1500, 1750, 2000]
    assert last_quarter_gain(steps, np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9, 1.0])) == pytest.approx(0.25)  # 0.8 at step 1500
    assert last_quarter_gain([300, 600, 900], np.array([0.2, 0.5, 0.5])) == pytest.approx(0.0)  # 600 <= 675
    assert last_quarter_gain([1000], np.array([0.5])) is None


def test_reproduce_writes_results_and_report(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    assert REQUIRED <= set(results)
    for arm in ("baseline", "synth2", "gold"):
        assert {"cider_a", "cider_b"} <= set(results["table2"][arm])
    for arm in ("baseline", "genpair", "real_extra"):
        assert {"cider_a", "concentration_top3", "concentration_top5", "entropy"} <= set(results["table3"][arm])
    assert {"steps_per_s", "cider_a"} <= set(results["table5"]["genpair"]) and results["table5"]["genpair_pixel"]["steps_per_s"] > 0
    assert {"steps", "baseline_mean", "baseline_std", "genpair_mean", "genpair_std", "parity_fraction", "baseline_last_quarter_gain"} <= set(results["figure6"])
    fig6 = results["figure6"]
    assert results["claims"]["baseline_last_quarter_gain"] == pytest.approx(last_quarter_gain(fig6["steps"], np.array(fig6["baseline_mean"])))
    assert {"oracle_seen", "oracle_heldout", "oracle_composition", "oracle_vq_seen", "oracle_vq_heldout", "oracle_llm", "oracle_llm_seen", "oracle_llm_heldout",
            "oracle_llm_composition", "oracle_genpair", "oracle_binding_heldout", "oracle_binding_seen", "oracle_count_right", "oracle_colours_right", "oracle_shapes_right", "text_information_nats",
            "oracle_paired_style", "oracle_objects_1", "oracle_objects_2", "oracle_objects_3plus"} <= set(results["generator"])
    # the control arms train and score: GenPair's captions with true and with uninformative images
    for arm in ("baseline", "genpair_blind", "genpair", "genpair_true"):
        assert {"cider_a", "cider_b", "gate_openness"} <= set(results["controls"][arm])
    controls = results["controls"]
    margin = min(controls["genpair_true"]["cider_a"] - controls["genpair"]["cider_a"], controls["genpair"]["cider_a"] - controls["genpair_blind"]["cider_a"])
    assert results["claims"]["genpair_ordering_margin"] == pytest.approx(margin)
    assert {"psnr", "codebook_usage", "oracle_accuracy", "oracle_accuracy_by_shape"} <= set(results["vq"])
    assert {"auc", "topk_cider_a", "random_cider_a", "all_cider_a"} <= set(results["curation"])
    assert 0.0 <= results["curation"]["auc"] <= 1.0
    # seeded numbers are bit-identical only on the same kernels, so the results name them
    assert results["hardware"] == describe_hardware(2, threads_per_job(2)) and "kernels" in results["hardware"]
    html = (tiny_run / "report.html").read_text()
    assert "data:image/png;base64," in html and "Table 2" in html
    assert (tiny_run / "report.md").read_text().startswith("# synth2 report")
    assert results["hardware"] in (tiny_run / "report.md").read_text()
    # the caption diversity is a stage of its own, whose Figure 5 the report shows
    assert "diversity" in results["stage_seconds"]
    assert "](report/diversity_concepts.png)" in (tiny_run / "report.md").read_text()
    for arm in ("baseline", "genpair"):
        assert (tiny_run / "vlm" / arm / "eval_a.predictions.json").exists()
        assert (tiny_run / "vlm" / arm / "eval_a.references.json").exists()


def test_a_run_built_by_two_workers_equals_one_built_by_one_process_at_their_threads(tiny_run, tmp_path):
    import subprocess
    import sys

    from synth2 import api

    with _workers_threads():
        api.reproduce(tmp_path / "one", preset="tiny", jobs=1)
    compared = subprocess.run([sys.executable, str(COMPARE), str(tmp_path / "one" / "results.json"), str(tiny_run / "results.json"), "--skip", "hardware"],
                              capture_output=True, text=True)
    assert compared.returncode == 0, compared.stdout
    assert " 0 different, 0 missing" in compared.stdout


def test_the_schedule_takes_the_generator_as_soon_as_the_tokenizer_and_the_arms_that_draw_last(tiny_run):
    from synth2.config import tiny
    from synth2.experiments.reproduce import schedule
    from synth2.run import Run
    from synth2.stages.arms import run_arms
    from synth2.stages.generator import t2i_eval
    from synth2.stages.models import vq
    from synth2.stages.vlm import vlm

    run = Run(tiny_run, tiny())
    targets = list(schedule(run))
    stages = [fn for fn, _ in targets]
    # two workers: one takes the tokenizer, the other the text models; the first free takes the
    # generator, which every synthetic arm waits for, before anything else
    assert stages[0] is vq and stages.index(t2i_eval) == 2
    synthetic = {name for name, arm in run_arms(run).items() if arm.synthetic}
    arms = [(i, args[0] in synthetic) for i, (fn, args) in enumerate(targets) if fn is vlm]
    drawing, not_drawing = [i for i, draws in arms if draws], [i for i, draws in arms if not draws]
    assert drawing and not_drawing and max(not_drawing) < min(drawing)


def test_blind_floor_is_the_frozen_lms_own_caption_for_every_image(tiny_run):
    import torch

    from synth2.config import tiny
    from synth2.run import Run
    from synth2.stages.models import frozen_lm

    results = json.loads((tiny_run / "results.json").read_text())
    lm = frozen_lm(Run(tiny_run, tiny()))
    # Hugging Face's own greedy generation from BOS gives the same caption as our decoder
    out = lm.model.generate(torch.tensor([[lm.bos_id]]), attention_mask=torch.ones(1, 1, dtype=torch.long), max_new_tokens=tiny().eval.max_new_tokens,
                            do_sample=False, eos_token_id=lm.eos_id, pad_token_id=lm.pad_id)
    hf_caption = lm.tokenizer.decode(out[0, 1:], skip_special_tokens=True).strip() or "."
    assert results["blind"]["caption"] == hf_caption
    for split in ("a", "b"):
        predictions = json.loads((tiny_run / "eval" / "blind" / f"eval_{split}.predictions.json").read_text())
        assert {p["caption"] for p in predictions} == {hf_caption}
        own = json.loads((tiny_run / "vlm" / "baseline" / f"eval_{split}.predictions.json").read_text())
        assert [p["image_id"] for p in predictions] == [p["image_id"] for p in own]  # the arms' images
    distinct = results["table2"]["baseline"]["distinct_a"]
    own = json.loads((tiny_run / "vlm" / "baseline" / "eval_a.predictions.json").read_text())
    assert distinct == len({p["caption"] for p in own}) / len(own)
    assert "Blind floor" in (tiny_run / "report.md").read_text()


def test_every_arm_trained_its_own_cross_attention_gates(tiny_run):
    """Arms train one after another on one loaded LM; each must open its own gates."""
    from safetensors.torch import load_file

    models = sorted((tiny_run / "vlm").glob("*/model/model.safetensors"))
    assert len(models) >= 9
    for path in models:
        gates = [v for k, v in load_file(path).items() if k.endswith("_gate")]
        assert gates and all(g.abs().item() > 0 for g in gates), path.parent.parent.name
        attn = [v.tanh().abs().item() for k, v in load_file(path).items() if k.endswith("attn_gate")]
        scores = json.loads((path.parent.parent / "scores.json").read_text())
        assert scores["gate_openness"] == pytest.approx(sum(attn) / len(attn), rel=1e-6)


def test_rerun_skips_every_finished_stage(tiny_run):
    before = json.loads((tiny_run / "manifest.json").read_text())
    results_before = json.loads((tiny_run / "results.json").read_text())
    result = CliRunner().invoke(app, ["reproduce", "--preset", "tiny", "--out", str(tiny_run)])
    assert result.exit_code == 0, result.output
    after = json.loads((tiny_run / "manifest.json").read_text())
    assert {k: v["finished"] for k, v in before["stages"].items()} == {k: v["finished"] for k, v in after["stages"].items()}
    # the rerun's own wall time is short, and the stages' compute time is kept
    results_after = json.loads((tiny_run / "results.json").read_text())
    assert results_after["compute_seconds"] == results_before["compute_seconds"] > results_after["wall_seconds"]


def test_changed_config_reruns_only_downstream_stages(tiny_run):
    before = json.loads((tiny_run / "manifest.json").read_text())["stages"]
    result = CliRunner().invoke(app, ["train", "vlm", "--run", str(tiny_run), "--preset", "tiny", "--set", "vlm.train.steps=12"])
    assert result.exit_code == 0, result.output
    after = json.loads((tiny_run / "manifest.json").read_text())["stages"]
    assert after["vlm/baseline"]["finished"] != before["vlm/baseline"]["finished"]
    for stage in ("world", "lm", "vq", "encode", "encode_text_only"):
        assert after[stage]["finished"] == before[stage]["finished"]


def test_sampler_sweep_evaluates_the_trained_generator_without_retraining_it(tiny_run):
    from synth2.config import tiny

    before = json.loads((tiny_run / "manifest.json").read_text())["stages"]
    sampler = tiny().sampler
    sweep = ["sampler-sweep", "--run", str(tiny_run), "--preset", "tiny", "--guidance", str(sampler.guidance)]
    result = CliRunner().invoke(app, sweep + ["--split", "a", "--steps", f"1,{sampler.steps}"])
    assert result.exit_code == 0, result.output
    after = json.loads((tiny_run / "manifest.json").read_text())["stages"]
    for stage in ("t2i", "t2i_eval"):
        assert after[stage]["finished"] == before[stage]["finished"]
    rows = json.loads((tiny_run / "sampler_sweep_a.json").read_text())["rows"]
    assert [(r["steps"], r["guidance"]) for r in rows] == [(1, sampler.guidance), (sampler.steps, sampler.guidance)]
    # the config's own sampler on split A is the report's stage, not a new one
    generator = json.loads((tiny_run / "results.json").read_text())["generator"]
    assert all(rows[1][k] == generator[k] for k in ("oracle_seen", "oracle_heldout", "oracle_count_right"))
    assert rows[0]["fd_vq"] != rows[1]["fd_vq"]  # one step draws other images
    assert (tiny_run / "sampler_sweep_a.png").stat().st_size > 0
    # a rerun finds every setting done
    assert CliRunner().invoke(app, sweep + ["--split", "a", "--steps", "1"]).exit_code == 0
    assert json.loads((tiny_run / "manifest.json").read_text())["stages"] == after
    bad = CliRunner().invoke(app, sweep + ["--split", "c"])
    assert bad.exit_code == 2 and "'a' or 'b'" in bad.output
    # a decoding setting given with --set holds for the sweep only: the run keeps its own
    saved = (tiny_run / "config.yaml").read_text()
    other = sampler.choice_temperature + 1
    assert CliRunner().invoke(app, sweep + ["--split", "a", "--steps", "1", "--set", f"sampler.choice_temperature={other}"]).exit_code == 0
    assert json.loads((tiny_run / "sampler_sweep_a.json").read_text())["sampler"]["choice_temperature"] == other
    assert (tiny_run / "config.yaml").read_text() == saved


def test_vq_pretrains_on_the_worlds_images_split_unless_given_shards(tiny_run):
    from synth2.config import tiny
    from synth2.stages.data import datasets
    from synth2.run import Run

    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["stages"]["vq"]["artifacts"]["trained_on"] == "{run}/world/images"  # run-relative, as every path
    cfg = tiny()
    cfg.data.vq_images = str(tiny_run / "world" / "eval_b")
    assert datasets(Run(tiny_run, cfg))[0]["vq_images"] == cfg.data.vq_images
    Run(tiny_run, tiny())  # put the run's own config back


def test_caption_command_captions_image_files(tiny_run, tmp_path):
    from PIL import Image

    from synth2.data.shards import read_pairs

    pair = next(iter(read_pairs(tiny_run / "world" / "eval_a")))
    Image.fromarray(pair.image).save(tmp_path / "x.png")
    result = CliRunner().invoke(app, ["caption", "--run", str(tiny_run), str(tmp_path / "x.png")])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "x.png") in result.output


def test_zero_shot_evaluate_on_user_shards_matches_the_pipelines_own_eval(tiny_run):
    """Benchmark shards given by path go through encode -> caption -> score and agree with the arm's own eval."""
    from synth2.config import tiny

    limit = tiny().eval.max_images
    result = CliRunner().invoke(app, ["evaluate", str(tiny_run / "world" / "eval_b"), "--run", str(tiny_run), "--limit", str(limit)])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    own = json.loads((tiny_run / "vlm" / "baseline" / "scores.json").read_text())
    assert scores["METEOR"] > 0
    for metric in ("CIDEr", "Bleu_4", "METEOR", "ROUGE_L"):
        assert scores[metric] == pytest.approx(own[f"{metric}_b"], abs=1e-9), metric
    stage = next((tiny_run / "zeroshot" / "baseline").iterdir())
    assert (stage / "eval.predictions.json").exists() and (stage / "eval.references.json").exists()


def test_finetune_continues_an_arm_and_scores_it(tiny_run, monkeypatch):
    from synth2.models.vlm import VLM

    dropouts = []
    original = VLM.set_dropout
    monkeypatch.setattr(VLM, "set_dropout", lambda self, p: (dropouts.append(p), original(self, p)))
    args = ["finetune", "--run", str(tiny_run), "--train", str(tiny_run / "world" / "eval_a"), "--eval", str(tiny_run / "world" / "eval_b"), "--steps", "3", "--limit", "20"]
    refused = CliRunner().invoke(app, args + ["--set", "vlm.train.lr=1"])
    assert refused.exit_code != 0 and "finetune.* settings only" in refused.output
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["images"] == 20 and scores["train_pairs"] > 20  # every reference is a training caption
    assert {"CIDEr", "Bleu_4", "METEOR", "ROUGE_L"} <= set(scores)
    metrics = [json.loads(l) for l in next((tiny_run / "finetune").glob("*/*/metrics.jsonl")).read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m][-1] == 3
    assert max(m["lr"] for m in metrics if "lr" in m) <= 1e-5 and dropouts == [0.1]  # the paper's fine-tuning settings by default


def test_curate_command_exports_llava_json_and_scored_shards(tiny_run):
    from synth2.data.shards import read_pairs

    result = CliRunner().invoke(app, ["curate", "--run", str(tiny_run)])
    assert result.exit_code == 0, result.output
    report = json.loads((tiny_run / "curate" / "report.json").read_text())
    llava = json.loads((tiny_run / "curate" / "export" / "llava.json").read_text())
    assert len(llava) == report["k"] and llava[0]["conversations"][0]["value"].startswith("<image>")
    assert (tiny_run / "curate" / "export" / llava[0]["image"]).exists()
    pairs = list(read_pairs(tiny_run / "curate" / "export" / "shards"))
    weighted = [p.meta["weighted"] for p in pairs]
    assert len(pairs) == report["k"] and weighted == sorted(weighted, reverse=True)
    # the world LLM wrote every caption, so the oracle checks every synthetic image
    assert report["oracle_checked"] == report["after_filters"]
    assert set(report["oracle_right"]) == {"topk", "random", "all"} and all(0 <= v <= 1 for v in report["oracle_right"].values())


def test_arms_lists_every_trained_arm_relative_to_the_same_seed(tiny_run, tmp_path):
    results = json.loads((tiny_run / "results.json").read_text())
    rows_file = tmp_path / "arms.json"
    result = CliRunner().invoke(app, ["arms", "--run", str(tiny_run), "--relative-to", "gold", "--json", str(rows_file)])
    assert result.exit_code == 0, result.output
    rows = {r["arm"]: r for r in json.loads(rows_file.read_text())}
    assert set(rows) == set(results["arms"]) and all(r["seed"] == results["seed"] for r in rows.values())
    for arm, scores in results["arms"].items():
        assert rows[arm]["CIDEr_a"] == scores["CIDEr_a"]
    gold = results["arms"]["gold"]["CIDEr_a"]  # tiny VLMs often score 0, which gives no ratio
    assert rows["synth2"]["CIDEr_a_relative"] == (pytest.approx(results["arms"]["synth2"]["CIDEr_a"] / gold) if gold > 0 else None)


def test_trained_models_load_from_their_own_directories(tiny_run):
    """A model directory carries what its constructor needs from the other models."""
    from synth2.stages.artifacts import load_t2i, load_vq

    t2i = load_t2i(tiny_run / "t2i" / "model")
    vq = load_vq(tiny_run / "vq" / "model")
    tokens = json.loads((tiny_run / "t2i" / "model" / "args.json").read_text())
    assert t2i.codebook_size == vq.codebook_size == tokens["codebook_size"]
    assert list(t2i.grid) == tokens["grid"]


JOINT_HEAD = ["--set", "t2i.model.pointer_parts=[]", "--set", "t2i.model.pointer_fit_rank={}", "--set", "t2i.model.structure_first=false"]


@pytest.mark.parametrize("variant, factors", [
    (["--set", "vq.model.structure_input=pixels", "--set", "vq.model.colour_input=pixels", "--set", "vq.model.product_codebooks=[32,8]",
      "--set", "vq.model.latent_dim=32", "--set", "vq.recolour_swap=1.0", *JOINT_HEAD], (32, 8)),
    (["--set", "vq.model.colour_input=pixels", "--set", "vq.model.product_codebooks=[32,8]", "--set", "vq.model.latent_dim=32",
      *JOINT_HEAD, "--set", "t2i.model.chain_parts=false"], (32, 8)),
    (["--set", "vq.model.product_codebooks=[32,2,10]"], (32, 2, 10)),
], ids=["recolouring-swap", "colour-blind-structure", "colour-layers-with-pointers"])
def test_the_generator_trains_and_draws_on_product_codes(tiny_run, tmp_path, variant, factors):
    """Product codes (a structure and a colour codebook, trained with the recolouring swap or with
    a colour-blind structure encoder; or structure, background and object colour, with the
    structure and the object colour copied from caption words) go through the tokenizer, token
    shards, the factored generator and its evaluation."""
    import shutil

    from synth2.stages.artifacts import load_t2i, load_vq

    for name in ("world", "lm", "captions", "config.yaml", "manifest.json"):
        copy = shutil.copytree if (tiny_run / name).is_dir() else shutil.copy
        copy(tiny_run / name, tmp_path / name)
    result = CliRunner().invoke(app, ["train", "t2i", "--run", str(tmp_path), "--preset", "tiny", *variant])
    assert result.exit_code == 0, result.output
    vq, t2i = load_vq(tmp_path / "vq" / "model"), load_t2i(tmp_path / "t2i" / "model")
    assert vq.code_factors == t2i.code_factors == factors and t2i.codebook_size == math.prod(factors)
    metrics = json.loads((tmp_path / "t2i_eval" / "metrics.json").read_text())
    assert 0 <= metrics["oracle_seen"] <= 1 and metrics["masked_token_nll"] > 0
    vq_metrics = json.loads((tmp_path / "vq" / "metrics.json").read_text())
    assert 0 < vq_metrics["codebook_usage"] <= 1


def test_cached_sources_come_from_the_cache_while_genpair_is_drawn_on_the_fly(tiny_run, tmp_path):
    import shutil

    from synth2.config import preset
    from synth2.stages.arms import define_arms
    from synth2.stages.vlm import drawn_on_the_fly

    cfg = preset("tiny")
    corpora = sorted(cfg.world.text_only)
    arms = define_arms({"paired": 100, **{c: 200 for c in corpora}}, 10, cfg.experiments.real_extra_corpus, False)
    assert drawn_on_the_fly(cfg, arms["synth2"]) == set(corpora) and drawn_on_the_fly(cfg, arms["genpair"]) == {"llm"}
    cfg.synth.cached_sources = corpora
    assert drawn_on_the_fly(cfg, arms["synth2"]) == set() and drawn_on_the_fly(cfg, arms["genpair"]) == {"llm"}
    cfg.synth.mode = "cache"
    assert drawn_on_the_fly(cfg, arms["genpair"]) == set()

    for name in ("world", "lm", "vq", "encode", "t2i", "captions", "config.yaml", "manifest.json"):
        copy = shutil.copytree if (tiny_run / name).is_dir() else shutil.copy
        copy(tiny_run / name, tmp_path / name)
    result = CliRunner().invoke(app, ["train", "vlm", "--run", str(tmp_path), "--preset", "tiny", "--arm", "synth2",
                                      "--set", f"synth.cached_sources=[{','.join(corpora)}]"])
    assert result.exit_code == 0, result.output
    stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert stages["synthesize"]["status"] == stages["vlm/synth2"]["status"] == "done"
    assert {f"{name}.tokens.npy" for name in corpora} <= {p.name for p in (tmp_path / "synthesize").iterdir()}
    result = CliRunner().invoke(app, ["train", "vlm", "--run", str(tmp_path), "--preset", "tiny", "--arm", "synth2", "--set", "synth.cached_sources=[wbli]"])
    assert result.exit_code != 0 and "synth.cached_sources names ['wbli']" in str(result.exception)


def test_report_and_readme_table_render_again_from_results_json(tiny_run, tmp_path):
    (tiny_run / "report.md").unlink()
    result = CliRunner().invoke(app, ["report", "--run", str(tiny_run)])
    assert result.exit_code == 0, result.output
    assert (tiny_run / "report.md").read_text().startswith("# synth2 report")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:tiny -->\nSTALE TABLE\n<!-- /results:tiny -->\nend\n")
    result = CliRunner().invoke(app, ["report", "--run", str(tiny_run), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert "STALE TABLE" not in text and text.startswith("intro") and text.endswith("end\n")
    results = json.loads((tiny_run / "results.json").read_text())
    assert f"{results['table2']['baseline']['cider_a']:.3f}" in text
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n<!-- results:tiny -->\n<!-- /results:tiny -->\n")
    result = CliRunner().invoke(app, ["report", "--run", str(tiny_run), "--doc", str(doc)])
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert "### GenPair's gain split" in text and f"{results['controls']['genpair_true']['cider_a']:.3f}" in text


def test_reproduce_runs_end_to_end_on_the_users_own_shards_and_llm(tiny_run, tmp_path):
    """The path a researcher takes: their shards for every split, their LLM behind an
    OpenAI-compatible server; the world-only controls are left out, and nothing reads the world."""
    from chat_server import ChatServer

    world = tiny_run / "world"
    data = [f"data.paired={world / 'paired'}", f"data.eval.coco={world / 'eval_a'}", f"data.eval.flickr={world / 'eval_b'}",
            f"data.text_only.webli={world / 'webli'}", f"data.text_only.ltip={world / 'ltip'}"]
    args = ["reproduce", "--preset", "tiny", "--out", str(tmp_path / "run")] + [a for item in data for a in ("--set", item)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0 and "captions.backend" in str(refused.exception)  # never the world's LLM on user data
    with ChatServer(faulty_every=0) as server:
        llm = ["captions.backend=openai", f"captions.base_url={server.url}", "captions.model=world-llm"]
        result = CliRunner().invoke(app, args + [a for item in llm for a in ("--set", item)])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "controls" not in results and results["claims"]["genpair_ordering_margin"] is None
    assert results["generator"]["oracle_seen"] is None and results["table3"]["genpair"]["cider_a"] >= 0
    assert not (tmp_path / "run" / "world").exists()
    assert "Table 2" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_the_readmes_torchrun_command_runs_on_two_cpu_processes(tiny_run, tmp_path, parallel):
    """Copied from the README: rank 0 alone evaluates, writes and prints; no rank resumes. With
    FSDP the ranks gather the weights, and rank 0 exports and scores them."""
    import os
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "vlm" / "genpair")
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["stages"]["vlm/genpair"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    command = re.search(r"`(torchrun --nproc_per_node 2 -m synth2.cli train vlm [^`]*)`", readme).group(1).replace("RUN", str(run)).split()
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SYNTH2_PROGRESS": "0"}
    result = subprocess.run([torchrun, *command[1:], "--set", f"vlm.train.parallel={parallel}"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)  # one rank printed one result
    assert printed["stage"] == "vlm/genpair" and not printed["skipped"]
    assert "resuming" not in result.stderr and result.stderr.count("stage vlm/genpair") == 1
    scores = json.loads((run / "vlm" / "genpair" / "scores.json").read_text())
    assert {"CIDEr_a", "CIDEr_b"} <= set(scores)
    curve = [json.loads(l) for l in (run / "vlm" / "genpair" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in curve if "eval/cider_a" in m] == ([10, 20] if parallel == "ddp" else [])  # by rank 0; none when sharded
    assert (run / "vlm" / "genpair" / "model" / "model.safetensors").exists()
    assert (run / "vlm" / "genpair" / "checkpoints" / "step-20" / "dcp").is_dir() == (parallel == "fsdp")


def _script(name: str):
    """A module of scripts/ (they are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_replicates_retrain_on_copies_and_offset_zero_is_the_runs_own_generator(tiny_run, tmp_path, capsys):
    replicates = _script("generator_replicates")
    with _workers_threads():
        replicates.main([str(tiny_run), str(tmp_path), "--offsets", "0,1", "--splits", "a"])

    def weights(run):
        return (run / "t2i" / "model" / "model.safetensors").read_bytes()

    assert weights(tmp_path / "offset_0") == weights(tiny_run)  # same seed, same data: the same training
    assert weights(tmp_path / "offset_1") != weights(tiny_run)
    saved = json.loads((tmp_path / "replicates.json").read_text())["results"]
    own = json.loads((tiny_run / "t2i_eval" / "metrics.json").read_text())
    assert set(saved) == {"0", "1"} and saved["0"]["a"]["oracle_seen"] == own["oracle_seen"]
    table = capsys.readouterr().out
    assert "| a | oracle_seen |" in table and "| mean | range |" in table
    assert f"| a | masked_token_nll | {own['masked_token_nll']:.2f} |" in table  # nats, not scaled to percent
    assert not (tmp_path / "offset_0" / "vlm").exists()  # only the generator's upstream stages are copied


def test_generator_errors_put_each_image_in_the_class_that_says_what_is_wrong():
    errors = _script("generator_errors")

    def scene(*objects):
        return Scene(tuple(Obj(shape, colour, "small", i // 2, i % 2) for i, (shape, colour) in enumerate(objects)), "black")

    truth = scene(("circle", "red"), ("square", "blue"))
    cases = {
        "right": scene(("square", "blue"), ("circle", "red")),  # positions are free
        "fewer objects": scene(("circle", "red")),
        "more objects": scene(("circle", "red"), ("square", "blue"), ("star", "red")),
        "wrong shape": scene(("circle", "red"), ("star", "blue")),
        "wrong colour": scene(("circle", "red"), ("square", "green")),
        "wrong shape and colour": scene(("circle", "red"), ("star", "green")),
        "wrong binding": scene(("circle", "blue"), ("square", "red")),
    }
    assert {name: errors.drawn_class(truth, parsed) for name, parsed in cases.items()} == {name: name for name in cases}
    assert tuple(cases) == errors.DRAWN
    masked, shown = Obj("circle", "red", "small", 0, 0), [Obj("square", "blue", "small", 0, 1)]
    found = {"right": Obj("circle", "red", "large", 0, 0), "nothing": None, "a shown object again": Obj("square", "blue", "small", 0, 0),
             "right colour, wrong shape": Obj("star", "red", "small", 0, 0), "right shape, wrong colour": Obj("circle", "green", "small", 0, 0),
             "both wrong": Obj("star", "green", "small", 0, 0)}
    assert {name: errors.infill_class(masked, shown, obj) for name, obj in found.items()} == {name: name for name in found}
    assert tuple(found) == errors.INFILL
    # two objects are grouped by how the caption joins them; the world's own relations count
    assert errors.phrasing("a red circle to the left of a blue square", truth) == "2 named, as a relation"
    assert errors.phrasing("there is a red circle below a blue square", truth) == "2 named, as a relation"
    assert errors.phrasing("a red circle and a blue square above nothing", scene(("circle", "red"))) == "1 named"
    assert errors.phrasing("a red circle and a blue square on a black background", truth) == "2 named, as a list"
    assert errors.phrasing("a red circle aboveground, a blue square", truth) == "2 named, as a list"
    # scenes of several objects are grouped by what two of them share, a shape before a colour
    assert errors.sharing("", scene(("circle", "red"))) is None
    assert errors.sharing("", truth) == "2 named, all distinct"
    assert errors.sharing("", scene(("circle", "red"), ("square", "red"))) == "2 named, two of one colour"
    assert errors.sharing("", scene(("circle", "red"), ("circle", "red"), ("star", "blue"))) == "3 named, two of one shape"
    assert errors.shapes_shown_twice([truth, scene(("star", "red"), ("star", "blue"), ("star", "green")), scene(("star", "red"))]) == {"star": 1}


def test_generator_errors_reads_a_finished_run_without_changing_it(tiny_run, capsys):
    manifest = (tiny_run / "manifest.json").read_text()
    _script("generator_errors").main([str(tiny_run), "--split", "a"])
    assert (tiny_run / "manifest.json").read_text() == manifest  # no stage rerun
    drawn, shared, twice, infill, binding = capsys.readouterr().out.strip().split("\n\n")
    for text in (drawn, shared, infill, binding):
        for row in text.splitlines()[2:]:
            cells = row.strip("|").split("|")
            shares, n = [float(c) for c in cells[1:-1]], int(cells[-1])
            assert n > 0 and abs(sum(shares) - 100) <= len(shares) / 2  # one class per image, rounded
    # the metrics' 16 captions; every object of their scenes of two or more objects
    scenes = [meta["scene"]["objects"] for meta in load_pairs(tiny_run / "encode" / "eval_a", images=False).meta[:16]]
    assert drawn.splitlines()[-1].startswith("| all |") and int(drawn.splitlines()[-1].split("|")[-2]) == 16
    several = sum(len(objects) > 1 for objects in scenes)
    assert shared.splitlines()[-1].startswith("| all |") and int(shared.splitlines()[-1].split("|")[-2]) == several
    # per shape, the paired and the eval scenes with two or more of it; the last column counts the scenes
    paired_row, eval_row = (row.strip("|").split("|") for row in twice.splitlines()[2:])
    assert eval_row[0].strip() == "eval a" and int(eval_row[-1]) == 16
    assert sum(map(int, eval_row[1:-1])) >= sum(len({o["shape"] for o in objs}) < len(objs) for objs in scenes)
    assert int(infill.splitlines()[-1].split("|")[-2]) == sum(len(objects) for objects in scenes if len(objects) > 1)
    # 16 one-object captions per shape and group
    from synth2.api import open_run
    from synth2.eval.generator import binding_scenes
    from synth2.stages.data import world_spec

    run = open_run(tiny_run)
    expected = {f"{group} colours": len(group_scenes) for group, group_scenes in binding_scenes(world_spec(run), run.config.seed, 16).items() if group_scenes}
    assert {row.split("|")[1].strip(): int(row.split("|")[-2]) for row in binding.splitlines()[2:]} == expected


def test_paired_counts_reads_how_many_objects_an_alt_text_caption_names():
    from synth2.world.annotate import BACKGROUND_WORDS, COLOUR_WORDS, Annotator

    named_objects = _script("paired_counts").named_objects
    rng = np.random.default_rng(0)
    colours, shapes = sorted(COLOUR_WORDS), ["circle", "star", "heart"]
    for style in ("noisy_alt", "clean_alt", "alt"):
        for seed in range(40):
            careful = Annotator(style, seed, grid=2, omits=False)  # names every object
            count = 1 + seed % 3
            objects = tuple(Obj(shapes[i], colours[int(rng.integers(len(colours)))], "small", i // 2, i % 2) for i in range(count))
            scene = Scene(objects, sorted(BACKGROUND_WORDS)[seed % len(BACKGROUND_WORDS)])  # "dark blue" is a background
            caption = careful.describe(scene, rng)
            assert named_objects(caption) == count, (style, caption)


def test_paired_counts_puts_every_paired_record_in_one_row(tiny_run, capsys):
    _script("paired_counts").main([str(tiny_run / "world" / "paired")])
    rows = [line.strip("|").split("|") for line in capsys.readouterr().out.splitlines()[2:]]
    assert sum(int(row[1]) for row in rows) == len(load_pairs(tiny_run / "world" / "paired", images=False))
    for row in rows:  # exactly as many, more and fewer split each row's pairs
        assert sum(float(cell.strip().rstrip("%")) for cell in row[2:]) == pytest.approx(100, abs=0.2)


def test_an_analysis_reads_only_a_finished_generator_and_names_the_stages_that_are_not(tmp_path):
    from synth2.api import open_run
    from synth2.errors import UserError
    from synth2.stages.generator import finished_generator

    run = open_run(tmp_path / "run", preset="tiny")
    with pytest.raises(UserError, match=r"stage\(s\) lm, vq, t2i, encode not finished"):
        finished_generator(run, also=("encode",))
    assert not (tmp_path / "run" / "lm").exists()  # nothing was trained to fill the gap


def test_colour_probe_reads_the_colour_of_every_masked_patch_given_its_structure(tiny_run, capsys):
    import dataclasses

    import torch

    from synth2.api import open_run
    from synth2.eval.generator import binding_scenes
    from synth2.models.t2i import T2IModel
    from synth2.stages.data import world_spec
    from synth2.stages.generator import finished_generator
    from synth2.synthesis import TokenGenerator

    probe = _script("colour_probe")
    run = open_run(tiny_run)
    spec = world_spec(run)
    trained, _ = finished_generator(run)
    cell_patches = (trained.model.grid[0] // spec.cfg.grid) ** 2
    counts = {f"{group} colours": len(scenes) for group, scenes in binding_scenes(spec, run.config.seed, 2).items() if scenes}

    def rows_add_up(rows):
        assert set(counts) == {row[0] for row in rows}
        for group, scenes in counts.items():  # every masked patch shows the object or the background
            assert sum(int(row[2]) for row in rows if row[0] == group) == scenes * cell_patches

    # the tiny run's generator copies the colour with a pointer: the table has its four columns
    probe.main([str(tiny_run), "--per-shape", "2"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    header, rows = lines[0], [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    assert all(column in header for column in probe.COLUMNS + probe.POINTER_COLUMNS)
    rows_add_up(rows)
    assert all(0.0 <= float(value) <= 1.0 for row in rows for value in row[3:])
    # the same LM and VQ with an untrained generator that reads the VQ's ids as two parts, no pointer
    lm, size = trained.lm, trained.model.codebook_size
    joint_head = dataclasses.replace(trained.model.cfg, pointer_parts=[], pointer_fit_rank={}, structure_first=False)
    torch.manual_seed(0)
    model = T2IModel(joint_head, size, trained.model.grid, lm.hidden_size, code_factors=(size // 4, 4))
    rows = probe.probe(TokenGenerator(lm, model, run.config.sampler, trained.vq), spec, run.config.seed, per_shape=2)
    rows_add_up(rows)
    for row in rows:  # an untrained colour head spreads its probability over the 4 colour codes
        assert len(row) == len(probe.COLUMNS) and 0.1 < float(row[3]) < 0.4 and 0.0 <= float(row[4]) <= 1.0


def test_colour_probe_refuses_a_generator_of_joint_codes(tiny_run, monkeypatch):
    import dataclasses

    from synth2.api import open_run
    from synth2.models.t2i import T2IModel
    from synth2.stages.generator import finished_generator
    from synth2.synthesis import TokenGenerator

    probe = _script("colour_probe")
    trained, done = finished_generator(open_run(tiny_run))
    joint = dataclasses.replace(trained.model.cfg, pointer_parts=[], pointer_fit_rank={}, structure_first=False)
    model = T2IModel(joint, trained.model.codebook_size, trained.model.grid, trained.lm.hidden_size)  # one part: joint codes
    monkeypatch.setattr(probe, "finished_generator", lambda run: (TokenGenerator(trained.lm, model, trained.sampler, trained.vq), done))
    with pytest.raises(SystemExit, match="predicts joint codes; the probe needs product codes"):
        probe.main([str(tiny_run), "--per-shape", "1"])


def test_colour_probe_splits_a_pointers_probability_into_its_own_slot_and_the_words():
    import torch

    from synth2.models.t2i import CaptionPointer

    probe = _script("colour_probe")
    torch.manual_seed(0)
    pointer = CaptionPointer(width=16, text_width=8, size=5)
    text, mask = torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.bool)
    mask[1, 3] = False
    select = torch.rand(2, 6) < 0.6
    caption = pointer.caption(torch.randn(2, 4, 16), text, mask).at(select)
    state, own = torch.randn(int(select.sum()), 16), torch.randn(int(select.sum()), 5)
    true = torch.randint(0, 5, (len(state),))
    with torch.no_grad():
        own_weight, own_true, words_true, unweighed_true = probe.pointer_terms(pointer, state, own, caption, true)
        p_true = pointer(state, own, caption).exp().gather(-1, true[:, None])[:, 0]
        assert torch.allclose(own_weight * own_true + (1 - own_weight) * words_true, p_true, atol=1e-5)
        assert ((0 <= own_weight) & (own_weight <= 1)).all()
        # with the position's say taken away, the words' codes are the ones the words give
        pointer.fit.weight.zero_()
        pointer.fit.bias.zero_()
        assert torch.allclose(probe.pointer_terms(pointer, state, own, caption, true)[2], unweighed_true, atol=1e-6)
        assert not torch.allclose(words_true, unweighed_true)


def test_reencode_probe_decodes_the_eval_tokens_as_the_vq_stage_reads_them_back(tiny_run, capsys):
    probe = _script("reencode_probe")
    probe.main([str(tiny_run)])
    rows = {cells[0]: float(cells[1]) for cells in ([c.strip() for c in line.strip("|").split("|")] for line in capsys.readouterr().out.splitlines()[2:])}
    vq_metrics = json.loads((tiny_run / "vq" / "metrics.json").read_text())
    # the eval tokens decoded are the VQ's reconstructions of the same eval images
    assert rows["oracle, decoded"] == pytest.approx(round(vq_metrics["oracle_accuracy"], 3))
    parts = [share for name, share in rows.items() if name.startswith("part ")]
    assert len(parts) == 3 and 0.0 <= rows["tokens kept"] <= min(parts)  # a token is kept only when all its parts are
    assert 0.0 <= rows["oracle, decoded, encoded and decoded again"] <= 1.0
