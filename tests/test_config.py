import pytest

from synth2.config import Config, PRESETS, preset, resolve, use_world_codes
from synth2.configtools import ConfigError, apply_overrides, dump_yaml, load_yaml, to_dict


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_round_trip_through_yaml(name, tmp_path):
    cfg = preset(name)
    assert cfg.preset == name
    dump_yaml(cfg, tmp_path / "c.yaml")
    assert to_dict(load_yaml(Config, tmp_path / "c.yaml")) == to_dict(cfg)


def test_override_sets_nested_typed_values():
    cfg = apply_overrides(preset("quick"), ["world.paired=123", "world.skew=0.5", "world.shapes=[circle, square]"])
    assert cfg.world.paired == 123 and isinstance(cfg.world.skew, float)
    assert cfg.world.shapes == ["circle", "square"]


def test_override_of_dict_entry():
    cfg = apply_overrides(preset("quick"), ["world.text_only.ltip.size=7"])
    assert cfg.world.text_only["ltip"].size == 7
    # the other fields of that entry, and the other entries, stay as they were
    assert cfg.world.text_only["ltip"].style == preset("quick").world.text_only["ltip"].style and "webli" in cfg.world.text_only
    cfg = apply_overrides(preset("quick"), ["data.text_only.webli=/a", "data.text_only.ltip=/b"])
    assert cfg.data.text_only == {"webli": "/a", "ltip": "/b"}
    assert apply_overrides(cfg, ["data.text_only={}"]).data.text_only == {}  # an empty mapping empties it


def test_integer_keys_written_as_strings_become_integers(tmp_path):
    # JSON has string keys only, and a quoted YAML key is a string: the pointer part 2 either way
    path = tmp_path / "c.yaml"
    path.write_text('t2i:\n  model:\n    pointer_parts: [0, 2]\n    pointer_fit_rank: {"2": 1}\n')
    assert load_yaml(Config, path).t2i.model.pointer_fit_rank == {2: 1}
    assert apply_overrides(preset("quick"), ["t2i.model.pointer_fit_rank.2=1"]).t2i.model.pointer_fit_rank == {2: 1}
    with pytest.raises(ConfigError, match=r"t2i.model.pointer_fit_rank: key 'colour' is not an integer"):
        apply_overrides(preset("quick"), ["t2i.model.pointer_fit_rank={colour: 1}"])


def test_unknown_key_error_names_the_key():
    with pytest.raises(ConfigError, match="world.nonsense"):
        apply_overrides(preset("quick"), ["world.nonsense=1"])


def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("world:\n  resolutoin: 64\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*world.resolutoin"):
        load_yaml(Config, path)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="world.paired"):
        apply_overrides(preset("quick"), ["world.paired=lots"])


def test_resolve_prefers_preset_then_saved(tmp_path):
    saved = tmp_path / "config.yaml"
    dump_yaml(apply_overrides(preset("tiny"), ["seed=5"]), saved)
    assert resolve(saved=saved).seed == 5
    assert resolve("quick", saved=saved).preset == "quick"


def test_a_preset_on_the_users_own_images_leaves_out_the_worlds_codes(tmp_path):
    """The world's layered codes read colours off plain backgrounds: a preset keeps them for the
    embedded world, leaves them out for the user's images or VQ, and the user's own settings win."""
    world = resolve("quick")
    assert world.vq.model.colour_input == "layers" and world.t2i.model.pointer_parts == [0, 2]
    own = resolve("quick", overrides=["data.paired=/shards"])
    assert (own.vq.model.quantizer, own.vq.model.colour_input, own.t2i.model.pointer_parts) == ("vq", "pixels", [])
    assert own.vq.train.steps > world.vq.train.steps  # joint codes take longer to read back every object
    use_world_codes(own)
    own.vq.train, own.t2i.train = world.vq.train, world.t2i.train  # quick's step counts for the world's codes
    assert to_dict(own) == to_dict(apply_overrides(world, ["data.paired=/shards"]))  # nothing else differs
    assert resolve("tiny", overrides=["vq.pretrained=/vq"]).t2i.model.pointer_parts == []
    config_file = tmp_path / "own.yaml"
    config_file.write_text("preset: small\ndata:\n  paired: /shards\n")
    assert resolve(config_file=config_file).vq.model.quantizer == "vq"
    chosen = resolve("quick", overrides=["data.paired=/shards", "vq.model.quantizer=product", "vq.model.structure_input=coverage",
                                         "vq.model.colour_input=layers", "vq.model.product_codebooks=[256,2,10]", "vq.model.latent_dim=48"])
    assert chosen.vq.model.colour_input == "layers" and chosen.vq.model.product_codebooks == [256, 2, 10]
