"""Protocol settings: presets, validation with one-line dotted-key errors, round trips, overrides."""

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lhdbench.protocol import (
    EvalSettings,
    Protocol,
    ProtocolError,
    SearchSettings,
    SpeedSettings,
    load_protocol,
    preset_names,
    protocol_from_dict,
)

PRESETS = ("paper", "fast", "smoke")


def raises_one_line(match, fn, *args, **kwargs) -> str:
    with pytest.raises(ProtocolError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message == message.strip()
    return message


# --- presets -------------------------------------------------------------------------------------


def test_the_three_presets_are_shipped():
    assert set(PRESETS) <= set(preset_names())
    assert preset_names() == sorted(preset_names())


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_round_trips_exactly(name):
    protocol = load_protocol(name)
    assert protocol.name == name
    data = protocol.to_dict()
    assert list(data) == ["name", "search", "evaluate", "select", "speed", "methods"]
    assert protocol_from_dict(data) == protocol
    assert protocol_from_dict(json.loads(json.dumps(data))) == protocol  # JSON-able, floats exact
    assert json.dumps(protocol.to_dict()) == json.dumps(data)  # stable key order


def test_paper_preset_is_the_original_search_protocol():  # chaoji90/LHD search/DARTS/train_search_darts.py
    s = load_protocol("paper").search
    assert (s.epochs, s.batch_size) == (50, 176)
    assert (s.weight_lr, s.weight_lr_min, s.momentum, s.weight_decay, s.grad_clip) == (
        0.025, 3e-4, 0.9, 3e-4, 5.0)
    assert (s.arch_lr, s.arch_betas, s.arch_weight_decay) == (3e-4, (0.5, 0.999), 0.0)
    assert (s.train_portion, s.init_channels, s.layers) == (0.5, 16, 8)
    assert (s.max_train_images, s.steps_per_epoch) == (None, None)


def test_paper_preset_is_the_original_evaluation_protocol():  # upstream eval/<dataset>/train.py
    e = load_protocol("paper").evaluate
    assert (e.epochs, e.batch_size, e.lr, e.lr_min) == (600, 64, 0.025, 0.0)
    assert (e.momentum, e.weight_decay, e.grad_clip) == (0.9, 3e-4, 5.0)
    assert (e.auxiliary_weight, e.cutout, e.drop_path, e.best_after_epoch) == (0.4, 16, True, 400)
    assert e.adaptive_drop_path is False
    assert (e.max_train_images, e.max_test_images, e.steps_per_epoch, e.layers, e.init_channels) == (
        None,) * 5


def test_paper_preset_equals_the_documented_defaults():
    paper = load_protocol("paper")
    assert paper.search == SearchSettings()
    assert paper.evaluate == EvalSettings()
    assert paper.methods == {}
    assert paper.speed.compile is False


def test_fast_preset_keeps_the_search_and_shortens_only_the_evaluation():
    paper, fast = load_protocol("paper"), load_protocol("fast")
    assert fast.search == paper.search
    assert fast.speed == paper.speed
    assert fast.evaluate.epochs < paper.evaluate.epochs
    changed = {f.name for f in dataclasses.fields(EvalSettings)
               if getattr(fast.evaluate, f.name) != getattr(paper.evaluate, f.name)}
    assert changed == {"epochs", "best_after_epoch"}
    # the metric window is scaled in proportion to the run
    assert fast.evaluate.best_after_epoch / fast.evaluate.epochs == pytest.approx(400 / 600)


def test_smoke_preset_is_tiny_and_its_metric_is_defined():
    smoke = load_protocol("smoke")
    s, e = smoke.search, smoke.evaluate
    assert (s.epochs, s.batch_size, s.max_train_images, s.steps_per_epoch) == (2, 16, 64, 2)
    assert (s.init_channels, s.layers) == (4, 3)
    # both reduction cells (floor(L/3), floor(2L/3)) exist, are distinct and are not the first cell
    assert 0 < s.layers // 3 < 2 * s.layers // 3 < s.layers
    assert (e.epochs, e.batch_size, e.max_train_images, e.max_test_images, e.steps_per_epoch) == (
        2, 16, 64, 64, 2)
    assert (e.layers, e.init_channels, e.best_after_epoch, e.cutout) == (3, 8, 0, 16)
    assert smoke.speed == SpeedSettings(precision="fp32", channels_last=False, compile=False,
                                        deterministic=True)


# --- validation ----------------------------------------------------------------------------------


def test_unknown_section_names_it_and_the_known_sections():
    message = raises_one_line(r"^serch: unknown section", protocol_from_dict, {"serch": {}})
    assert "search, evaluate, select, speed, methods" in message


def test_unknown_key_names_the_dotted_key_and_the_known_keys():
    message = raises_one_line(r"^search\.batch_sise: unknown key", protocol_from_dict,
                              {"search": {"batch_sise": 64}})
    assert "known: epochs, batch_size," in message
    assert "batch_size?" in message  # suggestion


@pytest.mark.parametrize("section, key, value", [
    ("search", "epochs", "50"),  # string for int
    ("search", "epochs", True),  # bool for int
    ("search", "epochs", 50.0),  # float for int
    ("evaluate", "cutout", 16.0),
    ("evaluate", "best_after_epoch", False),
    ("search", "weight_lr", "0.025"),  # string for float
    ("search", "weight_lr", True),  # bool for float
    ("search", "arch_betas", "0.5, 0.999"),
    ("search", "arch_betas", [0.5, "0.999"]),
    ("search", "epochs", None),  # null for a setting that is not optional
    ("evaluate", "drop_path", 1),  # int for bool
    ("evaluate", "drop_path", "true"),
    ("speed", "precision", 32),
    ("speed", "deterministic", None),
])
def test_wrong_types_are_rejected_with_the_dotted_key(section, key, value):
    message = raises_one_line(rf"^{section}\.{key}: expected ", protocol_from_dict,
                              {section: {key: value}})
    assert type(value).__name__ in message


@pytest.mark.parametrize("section, key, value", [
    ("search", "epochs", 0),
    ("evaluate", "epochs", -3),
    ("search", "batch_size", 0),
    ("evaluate", "batch_size", -64),
    ("search", "layers", 0),
    ("search", "init_channels", 0),
    ("evaluate", "layers", 0),
    ("evaluate", "init_channels", -8),
    ("search", "max_train_images", 0),
    ("search", "steps_per_epoch", 0),
    ("evaluate", "max_test_images", 0),
    ("evaluate", "cutout", -1),
    ("evaluate", "best_after_epoch", -1),
    ("search", "weight_lr", -0.1),
    ("search", "weight_lr_min", -1e-9),
    ("search", "arch_lr", -3e-4),
    ("search", "weight_decay", -3e-4),
    ("search", "arch_weight_decay", -1),
    ("evaluate", "lr", -0.025),
    ("evaluate", "auxiliary_weight", -0.4),
    ("search", "weight_lr", math.inf),
    ("evaluate", "lr", math.nan),
    ("search", "grad_clip", 0),
    ("search", "momentum", 1.0),
    ("evaluate", "momentum", -0.1),
    ("search", "train_portion", 0),
    ("search", "train_portion", 1),
    ("search", "train_portion", 1.5),
    ("search", "arch_betas", [0.5]),
    ("search", "arch_betas", [0.5, 0.999, 0.9]),
    ("search", "arch_betas", [0.5, 1.0]),
    ("search", "arch_betas", [-0.1, 0.999]),
    ("speed", "precision", "fp16"),
])
def test_out_of_range_values_are_rejected_with_the_dotted_key(section, key, value):
    raises_one_line(rf"^{section}\.{key}: expected ", protocol_from_dict, {section: {key: value}})


def test_error_quotes_the_bad_value():
    assert raises_one_line("^evaluate.epochs: expected a positive integer, got -3", protocol_from_dict,
                           {"evaluate": {"epochs": -3}})


@pytest.mark.parametrize("epochs, best_after_epoch", [(600, 600), (600, 599), (100, 400), (1, 0), (2, 1)])
def test_best_after_epoch_must_leave_an_epoch_for_the_paper_metric(epochs, best_after_epoch):
    raises_one_line(r"^evaluate\.best_after_epoch: ", protocol_from_dict,
                    {"evaluate": {"epochs": epochs, "best_after_epoch": best_after_epoch}})


def test_best_after_epoch_may_leave_exactly_one_epoch():
    assert protocol_from_dict({"evaluate": {"epochs": 600, "best_after_epoch": 598}}).evaluate.epochs == 600


def test_missing_keys_and_null_sections_take_the_defaults():
    protocol = protocol_from_dict({"search": {"epochs": 3}, "evaluate": None})
    assert protocol.search == SearchSettings(epochs=3)
    assert protocol.evaluate == EvalSettings()
    assert protocol.speed == SpeedSettings()
    assert protocol.name == "custom"
    assert protocol_from_dict({}) == Protocol("custom")


def test_ints_become_floats_and_lists_become_tuples():
    search = protocol_from_dict({"search": {"weight_lr": 1, "arch_weight_decay": 0,
                                            "arch_betas": [0, 0.5]}}).search
    assert type(search.weight_lr) is float and search.weight_lr == 1.0
    assert type(search.arch_weight_decay) is float
    assert search.arch_betas == (0.0, 0.5) and all(type(b) is float for b in search.arch_betas)


def test_optional_caps_accept_null():
    e = protocol_from_dict({"evaluate": {"layers": None, "max_test_images": None}}).evaluate
    assert (e.layers, e.max_test_images) == (None, None)


def test_settings_objects_validate_on_direct_construction():
    with pytest.raises(ProtocolError, match=r"^search\.epochs: "):
        SearchSettings(epochs=0)
    with pytest.raises(ProtocolError, match=r"^speed\.precision: "):
        SpeedSettings(precision="fp64")
    with pytest.raises(ProtocolError, match=r"^evaluate\.best_after_epoch: "):
        EvalSettings(epochs=10)
    with pytest.raises(ProtocolError, match=r"^name: "):
        Protocol("")
    with pytest.raises(ProtocolError, match=r"^search: "):
        Protocol("x", search={"epochs": 2})


def test_protocols_are_immutable():
    protocol = load_protocol("smoke", {"methods": {"gdas": {"tau": [10, 0.1]}}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        protocol.search.epochs = 3
    with pytest.raises(TypeError):
        protocol.methods["gdas"]["tau"] = 1
    with pytest.raises(AttributeError):
        protocol.methods["gdas"]["tau"].append(1)
    assert hash(protocol) == hash(load_protocol("smoke", {"methods": {"gdas": {"tau": [10, 0.1]}}}))


# --- methods -------------------------------------------------------------------------------------


def test_method_overrides_round_trip_and_are_plain_in_to_dict():
    protocol = protocol_from_dict({"methods": {"pcdarts": {"batch_size": 576, "betas": [0.5, 0.999]},
                                               "gdas": {"schedule": {"tau_max": 10}}}})
    assert protocol.methods["pcdarts"]["batch_size"] == 576
    data = protocol.to_dict()
    assert data["methods"] == {"gdas": {"schedule": {"tau_max": 10}},
                               "pcdarts": {"batch_size": 576, "betas": [0.5, 0.999]}}
    assert list(data["methods"]) == ["gdas", "pcdarts"]  # sorted: stable order
    assert json.loads(json.dumps(data)) == data
    assert protocol_from_dict(data) == protocol


@pytest.mark.parametrize("methods, match", [
    ([1], r"^methods: "),
    ({"pcdarts": 576}, r"^methods\.pcdarts: "),
    ({"pcdarts": [("batch_size", 576)]}, r"^methods\.pcdarts: "),
    ({1: {"batch_size": 576}}, r"^methods: "),
    ({"pcdarts": {"batch_size": {1, 2}}}, r"^methods\.pcdarts\.batch_size: "),
    ({"pcdarts": {"lr": math.nan}}, r"^methods\.pcdarts\.lr: "),
])
def test_method_overrides_must_be_a_mapping_of_mappings_of_json_values(methods, match):
    raises_one_line(match, protocol_from_dict, {"methods": methods})


# --- replace and overrides -----------------------------------------------------------------------


def test_replace_merges_into_sections_and_leaves_the_original_alone():
    paper = load_protocol("paper")
    short = paper.replace(search={"epochs": 2}, evaluate={"epochs": 10, "best_after_epoch": 5},
                          methods={"pcdarts": {"batch_size": 576}})
    assert short.search == dataclasses.replace(paper.search, epochs=2)
    assert (short.evaluate.epochs, short.evaluate.best_after_epoch, short.evaluate.lr) == (10, 5, 0.025)
    assert short.methods == {"pcdarts": {"batch_size": 576}}
    assert short.name == "paper"
    assert paper == load_protocol("paper")
    more = short.replace(methods={"pcdarts": {"arch_lr": 6e-4}}, name="mine")
    assert more.methods == {"pcdarts": {"batch_size": 576, "arch_lr": 6e-4}}
    assert more.name == "mine"


def test_replace_accepts_a_settings_object_for_a_whole_section():
    smoke = load_protocol("smoke")
    assert load_protocol("paper").replace(search=smoke.search).search == smoke.search


def test_replace_validates():
    paper = load_protocol("paper")
    raises_one_line(r"^search\.epochs: expected a positive integer", paper.replace, search={"epochs": 0})
    raises_one_line(r"^evaluate\.best_after_epoch: ", paper.replace, evaluate={"epochs": 100})
    raises_one_line(r"^search\.epoch: unknown key", paper.replace, search={"epoch": 2})
    raises_one_line(r"^serch: unknown section", paper.replace, serch={"epochs": 2})


def test_overrides_apply_and_validate():
    protocol = load_protocol("paper", {"evaluate": {"epochs": 150, "best_after_epoch": 100},
                                       "speed": {"precision": "fp32"}})
    assert (protocol.evaluate.epochs, protocol.evaluate.best_after_epoch) == (150, 100)
    assert protocol.evaluate.lr == 0.025 and protocol.speed.precision == "fp32"
    # The keys not overridden keep the preset's values.
    assert protocol.speed == dataclasses.replace(load_protocol("paper").speed, precision="fp32")
    assert protocol.name == "paper"
    raises_one_line(r"^evaluate\.epochs: expected a positive integer, got 0", load_protocol, "paper",
                    {"evaluate": {"epochs": 0}})
    raises_one_line(r"^evaluate\.best_after_epoch: ", load_protocol, "paper", {"evaluate": {"epochs": 150}})
    raises_one_line(r"^overrides: ", load_protocol, "paper", [("evaluate", {})])


# --- files ---------------------------------------------------------------------------------------


def test_unknown_preset_lists_the_known_presets():
    message = raises_one_line(r"unknown protocol preset 'papr'", load_protocol, "papr")
    assert all(name in message for name in PRESETS)


def test_load_protocol_from_a_file_path(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("# a comment\nsearch:\n  epochs: 10\n  weight_lr: 1e-3\n  arch_lr: 6.0e-4\n"
                    "evaluate:\n  epochs: 20\n  best_after_epoch: 10\n")
    protocol = load_protocol(str(path))
    assert protocol.name == "short"
    assert (protocol.search.epochs, protocol.search.weight_lr, protocol.search.arch_lr) == (10, 1e-3, 6e-4)
    assert (protocol.evaluate.epochs, protocol.evaluate.best_after_epoch) == (20, 10)
    assert protocol.search.batch_size == 176  # missing keys take the defaults
    assert load_protocol(path) == protocol  # a Path works too
    assert load_protocol(path, {"search": {"epochs": 3}}).search.epochs == 3


def test_a_name_key_in_the_file_names_the_protocol(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: my-protocol\nspeed:\n  precision: bf16\n")
    assert load_protocol(path).name == "my-protocol"


def test_errors_in_a_file_name_the_key_and_the_file(tmp_path):
    path = tmp_path / "bad-value.yaml"
    path.write_text("search:\n  epochs: fifty\n")
    message = raises_one_line(r"^search\.epochs: expected a positive integer, got 'fifty'", load_protocol,
                              path)
    assert str(path) in message


def test_malformed_yaml_gives_a_one_line_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("search:\n  epochs: [1,\n  batch_size: 3\n")
    message = raises_one_line("invalid YAML", load_protocol, str(path))
    assert str(path) in message and "line" in message


@pytest.mark.parametrize("text", ["- search\n- evaluate\n", "just a string\n", "42\n", ""])
def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path, text):
    path = tmp_path / "not-a-mapping.yaml"
    path.write_text(text)
    message = raises_one_line("expected a mapping of sections", load_protocol, str(path))
    assert str(path) in message


def test_a_missing_file_is_a_protocol_error(tmp_path):
    raises_one_line("cannot read protocol file", load_protocol, str(tmp_path / "absent.yaml"))


# --- property: any valid settings round-trip --------------------------------------------------------

_rate = st.floats(0, 10, allow_nan=False, allow_infinity=False)
_cap = st.none() | st.integers(1, 10**6)
_search = st.fixed_dictionaries({}, optional={
    "epochs": st.integers(1, 1000), "batch_size": st.integers(1, 4096), "weight_lr": _rate,
    "weight_lr_min": _rate | st.integers(0, 3), "momentum": st.floats(0, 0.99),
    "grad_clip": st.floats(1e-6, 100), "arch_betas": st.tuples(st.floats(0, 0.99), st.floats(0, 0.99)),
    "train_portion": st.floats(0.01, 0.99), "layers": st.integers(1, 30), "max_train_images": _cap,
    "steps_per_epoch": _cap,
})
_evaluate = st.integers(2, 1000).flatmap(lambda epochs: st.fixed_dictionaries(
    {"epochs": st.just(epochs), "best_after_epoch": st.integers(0, epochs - 2)},
    optional={"lr": _rate, "auxiliary_weight": _rate, "cutout": st.integers(0, 32),
              "drop_path": st.booleans(), "adaptive_drop_path": st.booleans(), "layers": _cap,
              "init_channels": _cap, "max_test_images": _cap}))
_speed = st.fixed_dictionaries({}, optional={
    "precision": st.sampled_from(["fp32", "bf16"]), "channels_last": st.booleans(),
    "compile": st.booleans(), "deterministic": st.booleans()})
_methods = st.dictionaries(st.text("abcdefgh-_", min_size=1, max_size=8), st.dictionaries(
    st.text("abc_", min_size=1, max_size=5),
    st.none() | st.booleans() | st.integers(-10, 10) | _rate | st.lists(st.integers(0, 9), max_size=3)),
    max_size=3)


@settings(max_examples=60, deadline=None)
@given(search=_search, evaluate=_evaluate, speed=_speed, methods=_methods)
def test_any_valid_settings_round_trip_through_to_dict_and_json(search, evaluate, speed, methods):
    protocol = protocol_from_dict({"search": search, "evaluate": evaluate, "speed": speed,
                                   "methods": methods}, name="prop")
    data = protocol.to_dict()
    assert protocol_from_dict(data) == protocol
    assert protocol_from_dict(json.loads(json.dumps(data))) == protocol
    assert protocol_from_dict(data).to_dict() == data
