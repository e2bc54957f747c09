import pytest

from synth2.config import Config, PRESETS, preset, resolve
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
