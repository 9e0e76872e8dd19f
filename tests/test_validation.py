"""ltpa_jax.validation: every rule about a config, one class of rule per test.

Each refusal is a `ConfigError` (a ValueError) whose message is one line naming the field as on
the command line, the value, and the fix. Tests run with 8 forced CPU devices (conftest.py).
"""

import math

import jax
import pytest
from conftest import override

from ltpa_jax import validation
from ltpa_jax.configs import default
from ltpa_jax.models import create_model
from ltpa_jax.validation import ConfigError


def _config(**overrides):
    """The default config with dotted overrides ("model.num_taps": 2)."""
    return override(default.get_config(), **overrides)


def _refused(check, config) -> str:
    """The message of the ConfigError that `check(config)` raises; it is one line."""
    with pytest.raises(ConfigError) as info:
        check(config)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_default_config_is_valid():
    validation.check_config(default.get_config())
    validation.check_model_config(default.get_config())
    validation.check_model_config(default.get_model_config())


# --- Field names, at any depth. -----------------------------------------------------------------


@pytest.mark.parametrize(
    "field, suggestion",
    [
        ("model.num_tap", "config.model.num_taps"),  # Misspelt in the model section.
        ("lerning_rate", "config.learning_rate"),  # Misspelt at the top.
        ("num_taps", "config.model.num_taps"),  # Right name, wrong section.
        ("model.learning_rate", "config.learning_rate"),
        ("foo", None),  # Nothing near it.
        ("model.foo", None),
    ],
)
def test_unknown_field_is_named_with_its_value_and_the_nearest_real_one(field, suggestion):
    message = _refused(validation.check_config, _config(**{field: 3}))
    assert message.startswith(f"unknown config field config.{field}")
    assert f"config.{field}=3" in message
    assert "correct the name or remove it" in message
    if suggestion:
        assert f"(did you mean {suggestion}?)" in message
    else:
        assert "did you mean" not in message


def test_create_model_refuses_a_misspelt_model_field_as_the_command_line_does():
    config = _config(**{"model.num_tap": 2})
    from_check = _refused(validation.check_config, config)
    assert _refused(create_model, config) == from_check
    assert _refused(create_model, config.model) == from_check  # A model section alone.
    # What the command line says for `--config.model.num_tap=2`, which ml_collections refuses
    # before any config check runs.
    assert str(validation.unknown_field_error("model.num_tap", 2)) == from_check


def test_missing_field_is_named_with_its_default():
    config = default.get_config()
    del config.model["depth"]
    message = _refused(validation.check_config, config)
    assert "config.model.depth is missing" in message and "164" in message
    assert "get_config()" in message


# --- Types. -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, kind",
    [
        ("learning_rate", "0.1", "a number"),
        ("batch_size", 12.5, "an integer"),
        ("model.num_taps", "3", "an integer"),
        ("model.width", True, "a number"),
        ("half_precision", 1, "True or False"),
        ("model.batch_norm", "yes", "True or False"),
        ("dataset", 10, "a string"),
        ("lr_decay_at_epochs", 60, "a tuple"),
        ("model", 3, "a section of fields"),
    ],
)
def test_value_of_the_wrong_type_is_refused_naming_the_type(field, value, kind):
    config = default.get_config()
    section, _, key = field.rpartition(".")
    target = config[section] if section else config
    del target[key]  # ConfigDict keeps a field's type: replace the field to break it.
    target[key] = value
    message = _refused(validation.check_config, config)
    assert f"config.{field}={value!r} must be {kind}" in message
    if kind != "a section of fields":
        assert f"e.g. --config.{field}=" in message


def test_integers_are_accepted_where_a_number_is_expected():
    validation.check_config(_config(learning_rate=1, **{"model.width": 1}))


# --- Choices. -----------------------------------------------------------------------------------

CHOICES = [
    ("dataset", "mnist"),
    ("crop_padding_mode", "wrap"),
    ("remat", "some"),
    ("model.backbone", "alexnet"),
    ("model.compatibility", "cosine"),
    ("model.normalization", "tanh"),
    ("model.tap_position", "middle"),
    ("model.projection", "sideways"),
    ("model.head", "vote"),
    ("model.conv_impl", "fft"),
]


@pytest.mark.parametrize("field, value", CHOICES)
def test_value_outside_the_choices_is_refused_listing_them(field, value):
    message = _refused(validation.check_config, _config(**{field: value}))
    assert f"config.{field}={value!r}" in message
    assert "use one of" in message and f"e.g. --config.{field}=" in message


@pytest.mark.parametrize(
    "field, value, choices",
    [
        ("remat", "some", ("none", "full", "keep_conv")),
        ("crop_padding_mode", "wrap", ("constant", "reflect")),
        ("model.compatibility", "cosine", ("pc", "dp")),
        ("model.normalization", "tanh", ("softmax", "sigmoid")),
        ("model.projection", "sideways", ("up", "down")),
        ("model.head", "vote", ("concat", "indep")),
        ("model.tap_position", "middle", ("before", "after")),
        ("model.conv_impl", "fft", ("auto", "xla", "matmul", "winograd")),
        ("model.backbone", "alexnet", ("vgg", "resnet", "agcnn", "ram")),
    ],
)
def test_choices_are_the_values_the_modules_take(field, value, choices):
    message = _refused(validation.check_config, _config(**{field: value}))
    assert str(choices) in message


def test_near_miss_choice_gets_a_suggestion():
    message = _refused(validation.check_config, _config(**{"model.compatibility": "pcc"}))
    assert "(did you mean 'pc'?)" in message and "--config.model.compatibility=pc" in message
    message = _refused(validation.check_config, _config(dataset="cifar1000"))
    assert "(did you mean 'cifar100'?)" in message


@pytest.mark.parametrize(
    "field, value",
    [(f, v) for f, v in CHOICES if f.startswith("model.")] + [("remat", "some")],
)
def test_create_model_refuses_a_bad_choice_with_the_message_of_check_config(field, value):
    config = _config(**{field: value})
    assert _refused(create_model, config) == _refused(validation.check_config, config)


@pytest.mark.parametrize(
    "field, value",
    [
        ("model.compatibility", "dp"),
        ("model.normalization", "sigmoid"),
        ("model.projection", "down"),
        ("model.head", "indep"),
        ("model.tap_position", "after"),
        ("model.conv_impl", "matmul"),
        ("remat", "keep_conv"),
    ],
)
def test_every_allowed_choice_builds_a_model(field, value):
    config = _config(**{field: value, "model.width": 1 / 16})
    model = create_model(config)
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), "float32")
    logits = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], images)
    assert logits.shape == (1, 100)


# --- Numbers. -----------------------------------------------------------------------------------

IMPOSSIBLE_NUMBERS = [
    ("learning_rate", math.nan, "finite number > 0"),
    ("learning_rate", 0.0, "finite number > 0"),
    ("learning_rate", -0.1, "finite number > 0"),
    ("learning_rate", math.inf, "finite number > 0"),
    ("momentum", 1.0, "in [0, 1)"),
    ("momentum", -0.5, "in [0, 1)"),
    ("momentum", math.nan, "in [0, 1)"),
    ("weight_decay", -1e-4, "finite number >= 0"),
    ("weight_decay", math.nan, "finite number >= 0"),
    ("lr_decay_factor", 0.0, "in (0, 1]"),
    ("lr_decay_factor", 2.0, "in (0, 1]"),
    ("lr_decay_every_epochs", -1, ">= 0 epochs"),
    ("warmup_epochs", -1.0, ">= 0"),
    ("warmup_epochs", math.inf, "finite number of epochs"),
    ("num_epochs", -1, ">= 0 epochs"),
    ("log_every_steps", 0, "positive number of steps"),
    ("eval_every_steps", -5, "positive number of steps"),
    ("checkpoint_every_steps", 0, "positive number of steps"),
    ("keep_checkpoints", 0, "at least 1"),
    ("image_size", 48, "positive multiple of 32"),
    ("image_size", 0, "positive multiple of 32"),
    ("crop_padding", -1, ">= 0 pixels"),
    ("shuffle_buffer", 0, "at least 1 example"),
    ("num_digits_train", 0, "at least 1 image"),
    ("num_digits_test", -3, "at least 1 image"),
    ("num_picture_images", -1, ">= 0 images"),
    ("seed", 2**64, "signed 64-bit integer"),
    ("model.width", 0.0, "finite number > 0"),
    ("model.width", math.nan, "finite number > 0"),
    ("model.num_classes", 0, "at least 1"),
]


@pytest.mark.parametrize(
    "field, value, requirement",
    IMPOSSIBLE_NUMBERS,
    ids=[f"{f}={v}" for f, v, _ in IMPOSSIBLE_NUMBERS],
)
def test_impossible_number_is_refused_with_its_range_and_an_example(field, value, requirement):
    message = _refused(validation.check_config, _config(**{field: value}))
    assert message.startswith(f"config.{field}={value!r} must ")
    assert requirement in message
    assert f"e.g. --config.{field}=" in message


@pytest.mark.parametrize(
    "overrides",
    [
        dict(momentum=0.0, weight_decay=0.0, nesterov=True),
        dict(lr_decay_factor=1.0, lr_decay_every_epochs=0, warmup_epochs=0.0),
        dict(num_picture_images=0, crop_padding=0, shuffle_buffer=1, keep_checkpoints=1),
        dict(num_epochs=0, num_train_steps=5),
        dict(image_size=224, learning_rate=1e-6, seed=-1),
        dict(lr_decay_at_epochs=(0, 0.5, 60)),
    ],
)
def test_numbers_at_the_edges_of_their_ranges_are_accepted(overrides):
    validation.check_config(_config(**overrides))


def test_reflect_padding_must_be_narrower_than_the_image():
    config = _config(crop_padding=32, crop_padding_mode="reflect")
    message = _refused(validation.check_config, config)
    assert "config.crop_padding=32" in message and "config.image_size=32" in message
    assert "--config.crop_padding=4" in message
    validation.check_config(_config(crop_padding=31, crop_padding_mode="reflect"))
    validation.check_config(_config(crop_padding=32, crop_padding_mode="constant"))


def test_nothing_to_train_names_both_fields():
    message = _refused(validation.check_config, _config(num_epochs=0, num_train_steps=-1))
    assert "config.num_epochs=0" in message and "config.num_train_steps=-1" in message
    assert "nothing to train" in message and "--config.num_train_steps > 0" in message


@pytest.mark.parametrize("epochs", [(60, -1), (math.nan,), ("60",)])
def test_decay_epochs_must_be_numbers_of_epochs(epochs):
    message = _refused(validation.check_config, _config(lr_decay_at_epochs=epochs))
    assert "config.lr_decay_at_epochs=" in message and "epochs >= 0" in message
    assert "--config.lr_decay_at_epochs='(60, 120, 160)'" in message


# --- What the backbone allows. ------------------------------------------------------------------


RN_ATT2 = {"model.backbone": "resnet", "model.num_taps": 2, "model.projection": "down"}


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"model.num_taps": 4}, ["config.model.num_taps=4", "'vgg'", "0 (plain VGG), 1, 2 or 3"]),
        ({"model.num_taps": -1}, ["config.model.num_taps=-1", "'vgg'"]),
        (
            {"model.backbone": "resnet", "model.num_taps": 3},
            ["config.model.num_taps=3", "'resnet'", "0 (plain ResNet), 1", "or 2"],
        ),
        (
            {**RN_ATT2, "model.depth": 18},
            ["config.model.depth=18", "9n + 2", "164"],
        ),
        (
            {**RN_ATT2, "model.tap_position": "after"},
            ["config.model.tap_position='after'", "'resnet'", "('before',)"],
        ),
        (
            {**RN_ATT2, "model.batch_norm": False},
            ["config.model.batch_norm=False", "'resnet'", "--config.model.batch_norm=True"],
        ),
    ],
)
def test_backbone_refuses_what_it_does_not_have(overrides, words):
    message = _refused(validation.check_config, _config(**overrides))
    for word in words:
        assert word in message
    assert _refused(create_model, _config(**overrides)) == message


def test_rn_att2_is_valid_and_the_vgg_ignores_the_depth():
    validation.check_config(_config(**RN_ATT2))
    validation.check_config(_config(**{"model.depth": 18}))


# --- The config against the dataset and the machine. --------------------------------------------


def test_num_classes_must_be_the_datasets():
    message = _refused(validation.check_config, _config(dataset="cifar10"))
    assert "config.model.num_classes=100" in message and "'cifar10' has 10 classes" in message
    assert "--config.model.num_classes=10" in message
    create_model(_config(dataset="cifar10"))  # The model alone does not know the dataset.


@pytest.mark.parametrize("field", ["batch_size", "eval_batch_size"])
@pytest.mark.parametrize("value", [12, 0, -8])
def test_batch_size_must_split_over_the_devices(field, value):
    message = _refused(validation.check_config, _config(**{field: value}))
    assert f"config.{field}={value} must be a positive multiple of the number of devices (8)" in (
        message
    )
    assert f"e.g. --config.{field}=8" in message


def test_batch_size_must_split_over_the_hosts(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 2)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    validation.check_config(_config(batch_size=2, eval_batch_size=4))
    message = _refused(validation.check_config, _config(batch_size=3))
    assert "config.batch_size=3" in message and "hosts (2)" in message


def test_half_precision_with_xla_convolution_is_refused_on_cpu():
    assert jax.default_backend() == "cpu"
    config = _config(half_precision=True, **{"model.conv_impl": "xla"})
    message = _refused(validation.check_config, config)
    assert "config.half_precision=True with config.model.conv_impl='xla'" in message
    assert "--config.model.conv_impl=auto" in message
    validation.check_config(_config(half_precision=True))  # auto: winograd on the CPU.
