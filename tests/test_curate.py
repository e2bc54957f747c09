"""SynthVLM curation: every filter rule keeps one caption and rejects another, the scores'
arithmetic, and a diffusers text-to-image pipeline (tiny, built here and saved) as synthesizer."""

import numpy as np
import pytest

from synth2.curate.filters import FilterConfig, caption_perplexities, filter_captions, rule_failures
from synth2.curate.scores import clip_score, weighted_score

GOOD = "This is an image of a red circle above a small blue square on a plain grey background."

RULES = [
    ("alphanumeric_ratio", "This is an image of a red circle above a small blue square on a plain grey background.",
     "This is ~~ ## @@ an !! image ?? of ** a ++ red == circle %% && $$ ^^ || ..."),
    ("char_repetition", "This is an image of a red circle above a small blue square on a plain grey background.",
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa is an image of a circle"),
    ("word_repetition", "This is an image of a red circle above a small blue square on a plain grey background.",
     "a red circle a red circle a red circle a red circle a red circle a red circle"),
    ("special_chars", "This is an image of a red circle, a blue square and a green star.",
     "This is an image of a red circle!!! (really) -- a blue square??? [yes]; a star..."),
    ("length", "This is an image of a red circle.", "A circle."),
    ("flagged_words", "This is an image of a red circle above a small blue square.", "This is an image of a nude red circle above a square."),
]


@pytest.mark.parametrize("rule, keep, reject", RULES, ids=[r[0] for r in RULES])
def test_each_rule_keeps_one_caption_and_rejects_another(rule, keep, reject):
    cfg = FilterConfig()
    assert rule not in rule_failures(keep, cfg)
    assert rule in rule_failures(reject, cfg)


def test_length_bounds_apply_at_both_ends():
    cfg = FilterConfig(min_words=5, max_words=12)
    assert "length" in rule_failures(" ".join(["word"] * 13), cfg)
    assert "length" not in rule_failures(" ".join(f"w{i}" for i in range(12)), cfg)


def test_perplexity_rule_rejects_what_the_lm_finds_surprising(tiny_llama_dir):
    from synth2.models.lm import FrozenLM

    lm = FrozenLM.from_pretrained(tiny_llama_dir)
    captions = [GOOD, "zqx vbnm qwrt plkj hgfd zxcv mnbv lkjh poiu ytre"]
    low, high = sorted(caption_perplexities(lm, captions))
    keep, rejects = filter_captions(captions, FilterConfig(max_perplexity=(low + high) / 2), lm)
    assert len(keep) == 1 and rejects == {"perplexity": 1}
    with pytest.raises(ValueError, match="needs the LM"):
        filter_captions(captions, FilterConfig(max_perplexity=10.0))


def test_filter_counts_every_rule_a_caption_fails():
    keep, rejects = filter_captions([GOOD, "!!", GOOD + " nsfw"], FilterConfig())
    assert keep == [0]
    assert rejects["length"] == 1 and rejects["flagged_words"] == 1 and rejects["alphanumeric_ratio"] == 1


def test_clip_score_and_weighted_score():
    cosine = np.array([0.4, -0.2, 0.1])
    assert clip_score(cosine) == pytest.approx([1.0, 0.0, 0.25])
    assert weighted_score(cosine, np.array([0.8, 0.9, -0.1]), 0.5) == pytest.approx([0.8, 0.45, 0.1])
    assert weighted_score(cosine, None, 0.5) == pytest.approx([0.4, 0.0, 0.1])


def _tiny_stable_diffusion(directory, tokenizer):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4, sample_size=16,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=32, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    tokenizer.model_max_length = 32
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(directory)
    return directory


def test_diffusers_pipeline_from_a_local_directory_synthesises_seeded_images(tmp_path, tokenizer):
    pytest.importorskip("diffusers")
    from synth2.curate.synthesizers import DiffusersSynthesizer

    path = _tiny_stable_diffusion(tmp_path / "sd", tokenizer)
    synth = DiffusersSynthesizer(path, steps=2, size=16, batch_size=2, device="cpu")
    captions = ["a red circle", "a blue square", "a green star"]
    first = synth.images(captions, seed=0)
    assert first.shape == (3, 16, 16, 3) and first.dtype == np.uint8
    assert np.array_equal(first, synth.images(captions, seed=0))
    assert not np.array_equal(first, synth.images(captions, seed=1))


def test_hf_clip_scorer_from_a_local_directory_agrees_with_clipmodel(tmp_path, tokenizer):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast

    from synth2.curate.scores import HFClipScorer

    clip_tokenizer = CLIPTokenizerFast(
        tokenizer_object=tokenizer._tokenizer, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token, unk_token=tokenizer.unk_token
    )
    text = dict(vocab_size=len(clip_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                bos_token_id=clip_tokenizer.bos_token_id, eos_token_id=clip_tokenizer.eos_token_id, pad_token_id=clip_tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(tmp_path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer).save_pretrained(tmp_path)

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    captions = ["a red circle", "a big blue square on a grey background", "two small green stars"]
    cosine = HFClipScorer(str(tmp_path)).cosine(images, captions, batch_size=2)
    # the reference: CLIPModel's own forward, which normalises and pairs the embeddings itself
    processor, model = CLIPProcessor.from_pretrained(tmp_path), CLIPModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = model(**processor(text=captions, images=list(images), return_tensors="pt", padding=True))
    assert cosine.shape == (3,)
    assert np.allclose(cosine, (out.image_embeds * out.text_embeds).sum(-1).numpy(), atol=1e-5)


def test_oracle_of_selections_scores_each_selection_against_the_captions_scenes():
    """Images rendered from their captions' scenes are right; images of another caption's scene
    are wrong; a caption the world LLM did not write is left out of every share."""
    from synth2.captions.prompts import PAPER_PROMPT
    from synth2.curate.curation import oracle_of_selections
    from synth2.world.llm import WorldLLM
    from synth2.world.render import render
    from synth2.world.scene import WorldConfig, WorldSpec

    spec = WorldSpec(WorldConfig(), seed=0)
    llm = WorldLLM(spec, noise=0.0)
    records = []
    for seed, shape in enumerate(spec.shapes[:8]):
        text, scene = llm.answer(PAPER_PROMPT.replace("[object]", shape), seed)
        records.append(({"caption": text, "class": shape, "seed": seed}, scene))
    scenes = [scene for _, scene in records]
    # the first four images show their own scenes, the last four the next caption's
    shown = scenes[:4] + scenes[5:] + scenes[4:5]
    images = np.stack([render(s, 32, spec.cfg.grid) for s in shown])
    captions = [record for record, _ in records]
    captions[3] = {**captions[3], "caption": "This is an image of something else entirely."}
    selections = {"own": np.arange(4), "other": np.arange(4, 8), "all": np.arange(8)}
    out = oracle_of_selections(spec, llm, captions, PAPER_PROMPT, images, selections)
    assert out["oracle_checked"] == 7
    assert out["oracle_right"] == {"own": 1.0, "other": 0.0, "all": pytest.approx(3 / 7)}


def _clip_task(lm_dir, dist):
    from synth2.models.clip import ClipConfig
    from synth2.models.lm import FrozenLM
    from synth2.train.clip import ClipStageConfig, ClipTask
    from synth2.train.loop import TrainConfig

    from conftest import CAPTIONS

    cfg = ClipStageConfig(model=ClipConfig(resolution=16, channels=8, embed_dim=16, text_hidden=32),
                          train=TrainConfig(steps=4, batch_size=8, lr=1e-2, warmup=1, checkpoint_every=4))
    images = np.random.default_rng(0).integers(0, 256, (len(CAPTIONS), 16, 16, 3), dtype=np.uint8)
    return ClipTask(cfg, FrozenLM.from_pretrained(lm_dir), images, CAPTIONS, dist, 0), cfg


def _train_clip_in_ddp(dist, lm_dir, out):
    import torch

    from synth2.train.loop import train

    task, cfg = _clip_task(lm_dir, dist)
    train(task, cfg.train, out / "ddp", dist, "clip")
    if dist.is_main:
        torch.save(task.modules["clip"].state_dict(), out / "ddp.pt")


def test_two_ddp_processes_train_clip_on_the_global_batchs_negatives_as_one_process_does(tiny_llama_dir, tmp_path):
    """Each rank holds half the batch; scored against its own half only, the loss (and so the
    update) would differ from one process's on the whole batch."""
    import torch

    from ddp import run_ddp

    from synth2.train.distributed import DistInfo
    from synth2.train.loop import train

    run_ddp(_train_clip_in_ddp, tiny_llama_dir, tmp_path)
    single, cfg = _clip_task(tiny_llama_dir, DistInfo())
    train(single, cfg.train, tmp_path / "single", DistInfo(), "clip")
    ddp_state = torch.load(tmp_path / "ddp.pt")
    # with each rank's own half as negatives the weights differ by up to 0.06 after these 4 steps;
    # on the global batch they agree to float noise (1e-4, Adam normalising tiny gradients)
    for name, value in single.modules["clip"].state_dict().items():
        assert torch.allclose(value, ddp_state[name], atol=1e-3), (name, (value - ddp_state[name]).abs().max())
