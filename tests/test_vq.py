import dataclasses

import numpy as np
import pytest
import torch
from resume import assert_resume_equals_uninterrupted

from synth2.eval.vq import codebook_stats, evaluate_vq, psnr, ssim
from synth2.models.lpips import LPIPS
from synth2.models.vq import VQConfig, VQModel, to_model_pixels, to_uint8
from synth2.train.distributed import DistInfo
from synth2.train.loop import TrainConfig, train
from synth2.train.vq import VQStageConfig, VQTask

TINY = VQConfig(channels=16, channel_mult=[1, 2], patch_size=2, num_res_blocks=1, mid_blocks=1, latent_dim=8, codebook_size=16, codebook_dim=4, kmeans_init=False)
TINY_FSQ = dataclasses.replace(TINY, quantizer="fsq", fsq_levels=[4, 4])  # 16 codes as well


def images(n=32, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("cfg", [TINY, TINY_FSQ], ids=["vq", "fsq"])
def test_shapes_and_api(cfg):
    torch.manual_seed(0)
    model = VQModel(cfg).eval()
    assert model.codebook_size == 16
    x = to_model_pixels(torch.from_numpy(images(4)))
    ids = model.encode(x)
    assert ids.shape == (4, 4, 4) and ids.dtype == torch.long and int(ids.max()) < 16
    assert model.embed(ids).shape == (4, 4, 4, 8)
    assert model.decode(ids).shape == (4, 3, 16, 16)
    recon, ids2, commit = model(x)
    assert torch.equal(ids, ids2) and torch.allclose(model.decode(ids), recon, atol=1e-5)


def test_fsq_quantizer_has_no_codebook_loss_and_names_bad_choices():
    model = VQModel(TINY_FSQ)
    x = to_model_pixels(torch.from_numpy(images(4)))
    _, ids, commit = model(x)
    assert commit.item() == 0
    # each of the 16 ids is its own point of the 4 x 4 grid of levels
    codes = model.embed(torch.arange(16).view(1, 4, 4))
    assert torch.unique(codes.reshape(16, -1), dim=0).shape[0] == 16
    with pytest.raises(ValueError, match="'vq', 'fsq' or 'product'"):
        VQModel(dataclasses.replace(TINY, quantizer="lfq"))


def test_group_norm_variant_builds_the_paper_layout():
    cfg = VQConfig(channels=32, channel_mult=[1, 1, 2], num_res_blocks=2, norm="group", latent_dim=16, codebook_size=32, codebook_dim=8, kmeans_init=False)
    model = VQModel(cfg).eval()
    assert cfg.downsample == 4
    assert model.encode(torch.zeros(1, 3, 32, 32)).shape == (1, 8, 8)


def test_golden_reconstruction_of_a_tiny_seeded_model():
    torch.manual_seed(1234)
    model = VQModel(TINY).eval()
    x = to_model_pixels(torch.from_numpy(images(2, seed=5)))
    recon, ids, _ = model(x)
    assert ids[0].tolist() == GOLDEN_IDS, ids[0].tolist()
    assert torch.allclose(recon[0, 0, 0, :5], torch.tensor(GOLDEN_RECON), atol=1e-4), recon[0, 0, 0, :5].tolist()


# recorded from this implementation: a change that alters them changes the model
GOLDEN_IDS = [[8, 8, 8, 8], [8, 3, 8, 11], [2, 8, 11, 8], [8, 11, 0, 8]]
GOLDEN_RECON = [-0.1737738, 0.1463667, -0.4821086, 0.1314231, -0.1541948]


TINY_PRODUCT = dataclasses.replace(TINY, quantizer="product", product_codebooks=[4, 4])


def test_product_codes_are_one_id_made_of_parts():
    torch.manual_seed(0)
    model = VQModel(TINY_PRODUCT).eval()
    assert model.codebook_size == 16 and model.code_factors == (4, 4)
    x = to_model_pixels(torch.from_numpy(images(4)))
    ids = model.encode(x)
    assert ids.shape == (4, 4, 4) and int(ids.max()) < 16
    structure, colour = model.quantizer.split_ids(ids)
    assert torch.equal(ids, structure * 4 + colour) and torch.equal(model.quantizer.join_ids([structure, colour]), ids)
    # each part's code vector sits in its own half of the embedding
    d = TINY_PRODUCT.latent_dim // 2
    same_structure = model.quantizer.join_ids([structure, (colour + 1) % 4])
    assert torch.equal(model.embed(ids)[..., :d], model.embed(same_structure)[..., :d])
    assert not torch.equal(model.embed(ids)[..., d:], model.embed(same_structure)[..., d:])
    recon, ids2, _ = model(x)
    assert torch.equal(ids, ids2) and torch.allclose(model.decode(ids), recon, atol=1e-5)
    with pytest.raises(ValueError, match="product_codebooks"):
        VQModel(dataclasses.replace(TINY_PRODUCT, product_codebooks=[16]))


def _one_shape_in_every_colour(shape="heart"):
    """A world object alone in the top-left cell, in every colour on both backgrounds (uint8 NHWC)."""
    from synth2.world.render import render
    from synth2.world.scene import Obj, Scene, WorldConfig

    world = WorldConfig()
    return np.stack([render(Scene((Obj(shape, c, "large", 0, 0),), bg), world.resolution, world.grid) for c in world.colours for bg in world.backgrounds])


def test_foreground_coverage_is_the_same_map_in_every_colour():
    from synth2.models.vq import foreground_coverage

    coverage = foreground_coverage(to_model_pixels(torch.from_numpy(_one_shape_in_every_colour())))[:, 0]
    assert coverage.shape == (16, 32, 32)
    # anti-aliased edges come back as the same blend in every colour, up to uint8 rounding
    assert (coverage.max(0).values - coverage.min(0).values).max() < 0.05
    assert coverage[0, 16:, 16:].eq(-1).all()  # the empty cells are background
    assert coverage[0].max() == 1 and ((coverage[0] > -1) & (coverage[0] < 1)).any()  # an interior and its edges


@pytest.mark.parametrize("structure_input", ["coverage", "pixels"])
def test_a_colour_blind_structure_encoder_gives_a_shape_one_structure_code_in_every_colour(structure_input):
    """Untrained, so only the input can make the codes agree: the coverage map does (up to the
    uint8 rounding of anti-aliased edges), the pixels do not."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY_PRODUCT, product_codebooks=[16, 4], structure_input=structure_input, channel_mult=[1], patch_size=4, encoder_kernel=1)
    model = VQModel(cfg).eval()
    structure, _ = model.quantizer.split_ids(model.encode(to_model_pixels(torch.from_numpy(_one_shape_in_every_colour()))))
    assert structure[0, :4, :4].unique().numel() > 1  # the shape's patches differ from each other
    agreement = (structure == structure.mode(0).values).float().mean()  # share of (colour, patch) on the patch's usual code
    assert agreement > 0.99 if structure_input == "coverage" else agreement < 0.7


def _every_object_in_one_cell():
    """Every (shape, colour, size, background) of the default world in the top-right cell (uint8 NHWC), and its keys."""
    from synth2.world.render import render
    from synth2.world.scene import Obj, Scene, WorldConfig

    world = WorldConfig()
    keys = [(s, c, z, bg) for s in world.shapes for c in world.colours for z in world.sizes for bg in world.backgrounds]
    return np.stack([render(Scene((Obj(s, c, z, 0, 1),), bg), world.resolution, world.grid) for s, c, z, bg in keys]), keys


def test_colour_layers_give_every_patch_of_an_object_its_palette_colour():
    from synth2.models.vq import colour_layers, foreground_coverage
    from synth2.world.vocab import BACKGROUNDS, COLOURS

    images, keys = _every_object_in_one_cell()
    pixels = to_model_pixels(torch.from_numpy(images))
    background, object_colour = colour_layers(pixels, foreground_coverage(pixels), 4)
    assert background.shape == (len(keys), 3, 8, 8) and object_colour.shape == (len(keys), 4, 8, 8)
    levels = lambda rgb: torch.tensor(rgb, dtype=torch.float32)[:, None] / 127.5 - 1  # noqa: E731
    shows = object_colour[:, 3] > 0
    assert not shows[:, 4:].any() and not shows[:, :, :4].any()  # only the object's cell shows it
    assert object_colour[:, :3][~shows[:, None].expand(-1, 3, -1, -1)].eq(0).all()
    for k, (_, colour, _, bg) in enumerate(keys):
        assert shows[k].sum() >= 4  # edges, however faint, show the object too
        # anti-aliased edges give back the object's own colour, up to uint8 rounding over small coverages
        assert (object_colour[k, :3][:, shows[k]] - levels(COLOURS[colour])).abs().max() * 127.5 < 12
        assert torch.allclose(background[k].flatten(1), levels(BACKGROUNDS[bg]))


def test_colour_layers_give_a_colour_one_code_on_every_shape_and_background():
    """Untrained, so only the input can make the codes agree: each colour has one object-colour code
    at every patch it shows in, and each background one background code."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY_PRODUCT, product_codebooks=[16, 4, 16], latent_dim=12, structure_input="coverage", colour_input="layers",
                              channel_mult=[1], patch_size=4, encoder_kernel=1)
    model = VQModel(cfg).eval()
    from synth2.models.vq import colour_layers, foreground_coverage

    images, keys = _every_object_in_one_cell()
    pixels = to_model_pixels(torch.from_numpy(images))
    _, background, colour = model.quantizer.split_ids(model.encode(pixels))
    shows = colour_layers(pixels, foreground_coverage(pixels), 4)[1][:, 3] > 0
    for name in sorted({c for _, c, _, _ in keys}):
        ks = [k for k, key in enumerate(keys) if key[1] == name]
        assert colour[ks][shows[ks]].unique().numel() == 1, name
    for name in sorted({bg for *_, bg in keys}):
        assert background[[k for k, key in enumerate(keys) if key[3] == name]].unique().numel() == 1, name


def test_colour_layers_need_the_coverage_structure_and_three_parts():
    with pytest.raises(ValueError, match="needs the coverage structure"):
        VQModel(dataclasses.replace(TINY_PRODUCT, colour_input="layers"))
    with pytest.raises(ValueError, match="three product codebooks"):
        VQModel(dataclasses.replace(TINY_PRODUCT, structure_input="coverage", colour_input="layers"))
    with pytest.raises(ValueError, match="colour_input"):
        VQModel(dataclasses.replace(TINY_PRODUCT, structure_input="coverage", colour_input="hue"))


def test_a_structure_encoder_needs_product_codes():
    with pytest.raises(ValueError, match="needs product codes"):
        VQModel(dataclasses.replace(TINY, structure_input="coverage"))
    with pytest.raises(ValueError, match="structure_input"):
        VQModel(dataclasses.replace(TINY_PRODUCT, structure_input="edges"))


@pytest.mark.parametrize("maps", ["linear", "channels"])
def test_recolouring_keeps_every_blend_weight_and_follows_the_seed(maps):
    from synth2.train.vq import recolour

    g = torch.Generator().manual_seed(0)
    alpha = torch.rand(6, 1, 8, 8, generator=g)
    foreground, background = torch.rand(6, 3, 1, 1, generator=g) * 0.5 + 0.1, torch.rand(6, 3, 1, 1, generator=g) * 0.3
    unit = alpha * foreground + (1 - alpha) * background
    out = recolour(unit * 2 - 1, 3, 5, maps).add(1).div(2)
    # the recoloured image is the same blend of the recoloured two colours (nothing clips here)
    fg_out = recolour(foreground.expand(-1, -1, 8, 8) * 2 - 1, 3, 5, maps).add(1).div(2)
    bg_out = recolour(background.expand(-1, -1, 8, 8) * 2 - 1, 3, 5, maps).add(1).div(2)
    assert torch.allclose(out, alpha * fg_out + (1 - alpha) * bg_out, atol=1e-5)
    assert not torch.allclose(fg_out, foreground.expand(-1, -1, 8, 8), atol=0.05)
    assert torch.equal(recolour(unit, 3, 5, maps), recolour(unit, 3, 5, maps)) and not torch.equal(recolour(unit, 3, 5, maps), recolour(unit, 3, 6, maps))
    if maps == "channels":  # a permutation of the channels, never the identity
        # (to float rounding: the map goes through [-1, 1] and back)
        assert all(torch.allclose(a.sort().values, b.sort().values, atol=1e-6) and not torch.allclose(a, b) for a, b in zip(fg_out[:, :, 0, 0], foreground[:, :, 0, 0]))
    with pytest.raises(ValueError, match="recolour_maps"):
        recolour(unit, 3, 5, "hsv")


def test_the_recolouring_swap_trains_product_codes_and_resumes_exactly(tmp_path):
    cfg = VQStageConfig(model=TINY_PRODUCT, train=TrainConfig(steps=8, batch_size=8, lr=1e-3, warmup=2, checkpoint_every=4, log_every=1),
                        channels_last=False, recolour_swap=1.0)
    assert_resume_equals_uninterrupted(lambda: VQTask(cfg, images(32), DistInfo(), 0), cfg.train, tmp_path, "vq", stop_after=4)
    lines = [__import__("json").loads(l) for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["swap_error"] > 0 and line["structure_invariance"] >= 0 for line in lines)
    with pytest.raises(ValueError, match="product codes"):
        VQModel(TINY)(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


def _task(seed=0):
    cfg = VQStageConfig(model=TINY, train=TrainConfig(steps=8, batch_size=8, lr=1e-3, warmup=2, checkpoint_every=4, log_every=1), disc_start=4, channels_last=False)
    return VQTask(cfg, images(32), DistInfo(), seed), cfg


def test_resume_equals_uninterrupted(tmp_path):
    _, cfg = _task()
    assert_resume_equals_uninterrupted(lambda: _task()[0], cfg.train, tmp_path, "vq", stop_after=4)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [__import__("json").loads(l)["step"] for l in lines] == list(range(1, 9))


def test_adversarial_phase_trains_the_discriminator(tmp_path):
    task, cfg = _task()
    before = [p.clone() for p in task.disc.parameters()]
    result = train(task, cfg.train, tmp_path, DistInfo(), "vq")
    assert "d_loss" in result.last_metrics and "g_loss" in result.last_metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, task.disc.parameters()))


def test_metrics_agree_with_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = images(3, 32, seed=1), images(3, 32, seed=2)
    b[:, :16] = a[:, :16]
    for i in range(3):
        assert psnr(a[i : i + 1], b[i : i + 1])[0] == pytest.approx(peak_signal_noise_ratio(a[i], b[i], data_range=255), rel=1e-6)
        reference = structural_similarity(a[i], b[i], channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        assert ssim(a[i : i + 1], b[i : i + 1])[0] == pytest.approx(reference, abs=2e-3)


def test_codebook_stats():
    stats = codebook_stats(np.array([[0, 1], [2, 3]]), (8,))
    assert stats["codebook_usage"] == 0.5 and stats["perplexity"] == pytest.approx(4.0)
    # product codes (4 x 2): ids 0..3 use parts {0, 1} x {0, 1}: half of the first codebook, all of the second
    product = codebook_stats(np.array([[0, 1], [2, 3]]), (4, 2))
    assert product["codebook_usage"] == pytest.approx((0.5 + 1.0) / 2) and product["perplexity"] == pytest.approx(4.0)


def test_evaluate_vq_reports_stability_and_oracle():
    from synth2.world.oracle import Oracle
    from synth2.world.render import render
    from synth2.world.scene import WorldConfig, WorldSpec, sample_scene

    spec = WorldSpec(WorldConfig(), 0)
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, spec) for _ in range(4)]
    pixels = np.stack([render(s, 32, spec.cfg.grid) for s in scenes])
    torch.manual_seed(0)
    metrics = evaluate_vq(VQModel(TINY), pixels, scenes, Oracle(spec))
    causes = {f"oracle_{c}_errors" for c in ("shape", "colour", "size", "missed", "spurious")}
    assert set(metrics) >= {"psnr", "ssim", "codebook_usage", "perplexity", "token_stability", "oracle_accuracy"} | causes
    assert 0 <= metrics["token_stability"] <= 1
    # an untrained decoder paints noise, which the oracle reads as an object in every cell:
    # nothing is missed, empty cells are read as objects, and the true cells hold wrong objects
    assert metrics["oracle_accuracy"] == 0 and metrics["oracle_missed_errors"] == 0
    occupied = sum(len(s.objects) for s in scenes)
    assert 0 < metrics["oracle_spurious_errors"] <= (len(scenes) * spec.cfg.grid**2 - occupied) / occupied
    assert metrics["oracle_shape_errors"] > 0
    assert set(metrics["oracle_accuracy_by_shape"]) == {o.shape for s in scenes for o in s.objects}
    assert not any(metrics["oracle_accuracy_by_shape"].values())


def test_lpips_from_local_weights(tmp_path):
    torch.manual_seed(0)
    model = LPIPS()
    features = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    torch.save(features, tmp_path / "vgg16.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}, tmp_path / "vgg.pth")
    loaded = LPIPS.from_directory(tmp_path)
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = a.clone().requires_grad_(True)
    assert torch.allclose(loaded(a, b), torch.zeros(2), atol=1e-6)
    d = loaded(a, (b + 0.3 * torch.randn_like(b)))
    assert (d > 0).all()
    d.sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_lpips_refuses_wrong_weights(tmp_path):
    torch.save({f"features.{k}": v for k, v in LPIPS().features.state_dict().items()}, tmp_path / "vgg16.pth")
    torch.save({"something": torch.zeros(1)}, tmp_path / "vgg.pth")
    with pytest.raises(ValueError, match="not LPIPS"):
        LPIPS.from_directory(tmp_path)


def test_pretrained_diffusers_vq_behind_the_same_interface(tmp_path):
    from diffusers import VQModel as DiffusersVQModel

    from synth2.stages.artifacts import load_vq

    torch.manual_seed(0)
    tiny = DiffusersVQModel(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, num_vq_embeddings=32, norm_num_groups=4, sample_size=16, layers_per_block=1,
    )
    tiny.save_pretrained(tmp_path / "vq")
    vq = load_vq(tmp_path / "vq")
    x = to_model_pixels(torch.from_numpy(images(2)))
    ids = vq.encode(x)
    assert ids.shape == (2, 8, 8) and int(ids.max()) < vq.codebook_size == 32
    assert vq.embed(ids).shape == (2, 8, 8, 4)
    pixels = vq.decode(ids)
    assert pixels.shape == (2, 3, 16, 16)
    # decoding the tokens equals the model's own quantise-then-decode path
    assert torch.allclose(pixels, tiny.decode(tiny.encode(x).latents).sample, atol=1e-5)
    assert to_uint8(pixels).shape == (2, 16, 16, 3)


def test_amused_layout_pipeline_directory_with_codebook_lookup(tmp_path):
    """aMUSEd ships its VQ in a pipeline's `vqvae/` folder and decodes token ids itself
    (`lookup_from_codebook`); both work behind the same interface."""
    from diffusers import VQModel as DiffusersVQModel

    from synth2.stages.artifacts import load_vq

    torch.manual_seed(0)
    tiny = DiffusersVQModel(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, num_vq_embeddings=32, norm_num_groups=4, sample_size=16, layers_per_block=1, lookup_from_codebook=True,
    )
    tiny.save_pretrained(tmp_path / "pipeline" / "vqvae")
    vq = load_vq(tmp_path / "pipeline")
    x = to_model_pixels(torch.from_numpy(images(2)))
    ids = vq.encode(x)
    assert vq.features(x).shape == (2, 4, 8, 8)
    assert torch.allclose(vq.decode(ids), tiny.decode(tiny.encode(x).latents).sample, atol=1e-5)


def test_lpips_gives_the_lpips_packages_distances_for_the_same_weights(tmp_path):
    """Reference values: `scripts/lpips_reference.py`, run once with the `lpips` package (v0.1,
    VGG) on seeded weights, since the ImageNet VGG16 weights cannot be downloaded here."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("lpips_reference", Path(__file__).parents[1] / "scripts" / "lpips_reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    features, lin = reference.fixture_weights()
    torch.save({f"features.{k}": v for k, v in features.items()}, tmp_path / "vgg16.pth")
    torch.save(lin, tmp_path / "vgg.pth")
    a, b = reference.fixture_pairs()
    expected = json.loads((Path(__file__).parent / "data" / "lpips_reference.json").read_text())["distances"]
    with torch.no_grad():
        distances = LPIPS.from_directory(tmp_path)(a, b)
    assert distances.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6)
