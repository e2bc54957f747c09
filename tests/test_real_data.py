"""The path a researcher takes on their own corpus, end to end on real photographs.

scikit-image's photographs, cropped into many images and captioned in COCO format, are
ingested into shards for every split; `reproduce` runs at the tiny preset with a tiny HF
LM and a tiny diffusers VQModel saved to local directories, and an OpenAI-compatible LLM
on loopback; the report renders. Nothing of the embedded world may run.
"""

from __future__ import annotations

import json
import re
import traceback

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synth2.cli import app
from synth2.data.ingest import ingest

# what each photograph shows, three ways
PHOTOS = {
    "astronaut": ["an astronaut in a white space suit stands before a flag", "a smiling astronaut holds a helmet", "a woman in a space suit in front of a flag"],
    "coffee": ["a cup of coffee on a saucer with a spoon", "a white cup of black coffee on a table", "coffee in a cup seen from above"],
    "chelsea": ["a tabby cat looks to the side", "an orange and brown cat sits indoors", "a striped cat with green eyes"],
    "rocket": ["a rocket stands on its launch pad", "a white rocket under a blue sky", "a space rocket ready for launch"],
    "hubble_deep_field": ["many small galaxies on a black sky", "a deep view of space full of galaxies", "colourful galaxies in the dark"],
    "immunohistochemistry": ["stained cells seen under a microscope", "brown and blue cells in tissue", "a microscope slide of tissue cells"],
    "retina": ["a photograph of the back of an eye", "the retina with its blood vessels", "an orange retina with dark vessels"],
    "colorwheel": ["a colour wheel on a white background", "a circle of every hue", "a round rainbow of colours"],
    "camera": ["a man with a camera on a tripod", "a black and white photo of a cameraman", "a photographer standing in a field"],
    "coins": ["old coins on a dark table", "rows of coins in black and white", "a grey picture of many coins"],
}
CLASSES = ["astronaut", "coffee", "cat", "rocket", "galaxy", "cell", "eye", "colour wheel", "camera", "coin"]
SPLITS = {"paired": 6, "eval_a": 2, "eval_b": 2, "webli": 2, "ltip": 2}  # crops per photograph


def _crops(photo: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    h, w = photo.shape[:2]
    out = []
    for _ in range(count):
        side = int(min(h, w) * rng.uniform(0.6, 0.95))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = photo[top : top + side, left : left + side]
        out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return out


@pytest.fixture(scope="module")
def photo_shards(tmp_path_factory):
    """COCO-format captions of photo crops, ingested into one shard set per split."""
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    files: dict[str, list] = {split: [] for split in SPLITS}
    for name, captions in PHOTOS.items():
        for split, count in SPLITS.items():
            for i, crop in enumerate(_crops(getattr(skimage.data, name)(), count, rng)):
                file = f"{split}/{name}_{i}.{'png' if i % 3 == 0 else 'jpg'}"
                (root / split).mkdir(exist_ok=True)
                Image.fromarray(np.ascontiguousarray(crop)).save(root / file)  # grey photos stay mode L
                files[split].append((file, [captions[(i + k) % 3] for k in range(2)]))
    shards = {}
    for split, entries in files.items():
        coco = {"images": [{"id": i, "file_name": f} for i, (f, _) in enumerate(entries)],
                "annotations": [{"id": 100 * i + k, "image_id": i, "caption": c} for i, (_, cs) in enumerate(entries) for k, c in enumerate(cs)]}
        (root / f"{split}.json").write_text(json.dumps(coco))
        report = ingest("coco", root / f"{split}.json", root / "shards" / split, images=root, size=32)
        assert report["kept"] == len(entries) and report["skipped"] == {}
        shards[split] = root / "shards" / split
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return shards, root / "classes.json"


def _reproduce(out, settings: list[str]):
    from chat_server import ChatServer

    with ChatServer(faulty_every=0, answer=_caption_for) as server:
        args = ["reproduce", "--preset", "tiny", "--out", str(out), "--set", f"captions.base_url={server.url}"]
        result = CliRunner().invoke(app, args + [a for s in settings for a in ("--set", s)])
    assert result.exit_code == 0, result.output + "".join(traceback.format_exception(*result.exc_info))
    return result


@pytest.fixture(scope="module")
def photo_lm(tmp_path_factory):
    """A tiny GPT-2 with a tokenizer trained on the captions, saved like any downloaded model."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from synth2.models.lm import train_tokenizer

    texts = [c for cs in PHOTOS.values() for c in cs] + [f"This is an image of a {c}." for c in CLASSES]
    tokenizer = train_tokenizer(texts * 4, 400)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def photo_vq(tmp_path_factory):
    """A tiny diffusers VQModel (random weights): 32 px -> 8x8 tokens."""
    import torch
    from diffusers import VQModel

    torch.manual_seed(0)
    model = VQModel(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                    latent_channels=4, num_vq_embeddings=64, norm_num_groups=4, sample_size=32, layers_per_block=1)
    path = tmp_path_factory.mktemp("diffusers_vq")
    model.save_pretrained(path)
    return path


def _caption_for(prompt: str, seed: int) -> str:
    """An LLM that follows the paper's prompt: one caption opening as asked, about the object."""
    obj = re.search(r"following object: (.+?)\. The caption", prompt).group(1)
    places = ["on a wooden table", "in a quiet room", "outdoors on a clear day", "under a bright light"]
    return (f"This is an image of a {obj} {places[seed % len(places)]}. The {obj} fills the middle of the frame and is seen "
            f"from the front, with a plain background behind it and soft shadows.")


def test_reproduce_on_real_photographs_with_a_real_lm_vq_and_llm_server(photo_shards, photo_lm, photo_vq, tmp_path):
    shards, classes = photo_shards
    out = tmp_path / "run"
    settings = [
        f"data.paired={shards['paired']}", f"data.eval.coco={shards['eval_a']}", f"data.eval.flickr={shards['eval_b']}",
        f"data.text_only.webli={shards['webli']}", f"data.text_only.ltip={shards['ltip']}",
        f"lm.path={photo_lm}", f"vq.pretrained={photo_vq}", f"captions.classes={classes}", "captions.n=20",
        "captions.backend=openai", "captions.model=tiny-llm",
    ]
    _reproduce(out, settings)
    results = json.loads((out / "results.json").read_text())
    for table, arms in (("table2", ("baseline", "synth2", "gold")), ("table3", ("genpair", "real_extra")), ("table5", ("genpair", "genpair_pixel"))):
        for arm in arms:
            assert results[table][arm]["cider_a"] >= 0, (table, arm)
    assert results["generator"]["oracle_seen"] is None and np.isfinite(results["generator"]["fd_vq"])
    assert "controls" not in results and not (out / "world").exists()
    report = (out / "report.md").read_text()
    assert "oracle" not in report.lower() and "Table 2" in report
    assert (out / "report.html").stat().st_size > 0


def test_arms_without_their_data_are_skipped_with_the_reason(photo_shards, photo_lm, photo_vq, tmp_path):
    """Paired data, eval splits and an LLM, no text-only corpus: Baseline, GenPair, Table 5 and
    curation train; Synth², Gold and extra real are named in results.json and the report as skipped."""
    shards, classes = photo_shards
    out = tmp_path / "run"
    _reproduce(out, [f"data.paired={shards['paired']}", f"data.eval.coco={shards['eval_a']}", f"data.eval.flickr={shards['eval_b']}",
                     f"lm.path={photo_lm}", f"vq.pretrained={photo_vq}", f"captions.classes={classes}", "captions.n=20",
                     "captions.backend=openai", "captions.model=tiny-llm"])
    results = json.loads((out / "results.json").read_text())
    assert set(results["skipped_arms"]) == {"synth2", "gold", "real_extra"} and "text-only" in results["skipped_arms"]["gold"]
    assert "table2" not in results and set(results["table3"]) == {"baseline", "genpair"}
    assert results["claims"]["synth2_share_of_gold"] is None
    assert not any((out / "vlm" / arm).exists() for arm in ("synth2", "gold", "real_extra"))
    assert "Not trained, for want of data: synth2 (no text-only corpus" in (out / "report.md").read_text()
