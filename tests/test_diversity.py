import numpy as np
import pytest

from synth2.eval.diversity import DiversityConfig, cluster_stats, diversity, elbow, plot_diversity


def blobs(k, n, seed=0, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(k, dim))
    return np.concatenate([c + rng.normal(size=(n, dim)) for c in centres])


def test_elbow_finds_the_number_of_blobs():
    k, _ = elbow(blobs(6, 60), list(range(2, 16)), seed=0)
    assert k == 6


def test_cluster_stats():
    uniform = cluster_stats(np.repeat(np.arange(20), 5), 20)
    assert uniform["entropy"] == pytest.approx(np.log2(20))
    assert uniform["concentration_top5"] == pytest.approx(0.25)
    skewed = cluster_stats(np.array([0] * 80 + list(range(1, 21))), 21)
    assert skewed["concentration_top3"] > 0.8 and skewed["entropy"] < uniform["entropy"]


def test_balanced_corpus_is_more_diverse_than_a_concentrated_one(tmp_path):
    space = blobs(10, 50, seed=1)
    labels = np.repeat(np.arange(10), 50)
    rng = np.random.default_rng(0)
    balanced = rng.choice(len(space), 200, replace=False)
    concentrated = rng.choice(np.flatnonzero(labels < 3), 140, replace=False)
    corpora = {"balanced": [f"b{i}" for i in balanced], "concentrated": [f"c{i}" for i in concentrated]}

    def embed(captions):
        return space[[int(c[1:]) for c in captions]]

    result = diversity(corpora, embed, DiversityConfig(k=10, k_range=[2, 4, 6, 8, 10, 12], seed=0))
    b, c = result["corpora"]["balanced"], result["corpora"]["concentrated"]
    assert b["entropy"] > c["entropy"] and b["concentration_top5"] < c["concentration_top5"]
    assert sum(b["cluster_sizes"]) == pytest.approx(1.0)
    assert plot_diversity(result, tmp_path / "d.png").exists()


def test_world_concept_embedding_reads_shapes_and_colours_whatever_the_wording():
    from synth2.eval.diversity import embed_with_world_concepts

    shapes, colours = ["square", "frame", "cross"], ["red", "purple"]
    e = embed_with_world_concepts(
        ["A red plus sign.", "there is a violet hollow square", "This is an image of a square, a red one, with squares", "nothing here"],
        shapes, colours,
    )
    assert e[0] == pytest.approx(np.array([0, 0, 1, 1, 0]) / np.sqrt(2))  # cross via "plus sign", red
    assert e[1] == pytest.approx(np.array([0, 1, 0, 0, 1]) / np.sqrt(2))  # "hollow square" is a frame, not a square
    assert e[2] == pytest.approx(np.array([2, 0, 0, 1, 0]) / np.sqrt(5))  # plural counts
    assert not e[3].any()


def test_balanced_fit_keeps_a_large_corpus_from_taking_the_centroids():
    # A: 2,000 captions in one unstructured cloud; B: 100 captions in 10 distinct topics.
    rng = np.random.default_rng(0)
    space = np.concatenate([rng.normal(scale=6, size=(2000, 8)), blobs(10, 10, seed=3) + 30])
    corpora = {"large": [f"{i}" for i in range(2000)], "topical": [f"{i}" for i in range(2000, 2100)]}

    def embed(captions):
        return space[[int(c) for c in captions]]

    def topical_entropy(balance):
        cfg = DiversityConfig(k=10, k_range=[2, 4, 6], seed=0, center=False, balance=balance)
        result = diversity(corpora, embed, cfg)
        assert result["corpora"]["large"]["captions"] == 2000  # every caption is assigned, not only the fit sample
        return result["corpora"]["topical"]["entropy"], result["fit_per_corpus"]

    unbalanced, fit_none = topical_entropy(False)
    balanced, fit_n = topical_entropy(True)
    assert fit_none is None and fit_n == 100
    assert unbalanced < 1.5 < 2.5 < balanced  # unbalanced, the large corpus's cloud takes most of the 10 centroids


def test_the_elbow_only_tries_fewer_clusters_than_distinct_embeddings():
    # 5 distinct points, repeated: k must stay below 5, and 1 distinct point cannot be clustered
    space = np.repeat(blobs(5, 1, seed=1), 20, axis=0)
    corpora = {"a": [f"{i}" for i in range(50)], "b": [f"{i}" for i in range(50, 100)]}

    def embed(captions):
        return space[[int(c) for c in captions]]

    result = diversity(corpora, embed, DiversityConfig(k_range=[2, 3, 4, 5, 6, 8], seed=0, center=False))
    assert set(result["wcss"]) == {"2", "3", "4"}
    with pytest.raises(ValueError, match="only 1 distinct embeddings"):
        diversity(corpora, lambda c: np.zeros((len(c), 3)), DiversityConfig(k_range=[2, 4], seed=0, center=False))


@pytest.mark.parametrize("balance", [True, False])
def test_diversity_cli_over_jsonl_corpora_with_a_local_lm(tmp_path, tiny_llama_dir, balance):
    import json

    from typer.testing import CliRunner

    from synth2.cli import app
    from synth2.data.corpus import write_captions

    shapes, colours = ["circle", "square", "star", "heart"], ["red", "blue", "green"]
    many = [f"a {c} {s} on a grey background" for s in shapes for c in colours] * 3
    few = [f"this is an image of a {c} {s}" for s in shapes[:2] for c in colours]
    write_captions(tmp_path / "many.jsonl", ({"caption": c} for c in many))
    write_captions(tmp_path / "few.jsonl", ({"caption": c} for c in few))
    args = ["diversity", str(tmp_path / "many.jsonl"), str(tmp_path / "few.jsonl"), "--lm", str(tiny_llama_dir), "--k", "3", "--json", str(tmp_path / "d.json")]
    result = CliRunner().invoke(app, args + ([] if balance else ["--no-balance"]))
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "d.json").read_text())
    assert {name: c["captions"] for name, c in written["corpora"].items()} == {"many": len(many), "few": len(few)}
    assert written["fit_per_corpus"] == (len(few) if balance else None)
    assert ("fitted on 6 per" in result.output) == balance  # the title may wrap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_world_llm_captions_are_less_concentrated_than_the_skewed_paired_ones(tiny_world, seed):
    """The paper's direction (Table 8) on the tiny world, with its four corpora co-clustered by content.

    Fails with each corpus centred first: the centring subtracts the paired split's skew."""
    from synth2.captions.generate import plan_items
    from synth2.captions.prompts import PAPER_PROMPT, fill
    from synth2.data.arrays import load_pairs
    from synth2.eval.diversity import embed_with_world_concepts
    from synth2.world.llm import WorldLLM
    from synth2.world.scene import WorldSpec

    out, _, cfg = tiny_world
    spec = WorldSpec(cfg.world, cfg.seed)
    llm = WorldLLM(spec, noise=0.0)
    corpora = {name: load_pairs(out / name, images=False).captions for name in ("paired", "ltip", "webli")}
    corpora["llm"] = [llm.complete(fill(PAPER_PROMPT, shape), s) for shape, s in plan_items(spec.shapes, 200, 0)]
    result = diversity(corpora, lambda c: embed_with_world_concepts(c, spec.shapes, spec.colours), DiversityConfig(k_range=list(range(2, 21, 2)), seed=seed))
    paired, generated = result["corpora"]["paired"], result["corpora"]["llm"]
    assert generated["concentration_top3"] < paired["concentration_top3"]
    assert generated["entropy"] > paired["entropy"]
