"""Every rule about a config, in one place: fail before anything is built or written.

`check_config` checks a whole experiment config once, at the boundary (the commands and
`train.train_and_evaluate` call it); `check_model_config` checks what `create_model` reads.
Both raise `ConfigError`, a `ValueError` whose message is one line naming the field as on the
command line (`config.model.num_taps`), its value, and the fix:

    config.model.num_taps=4 is not possible for config.model.backbone='vgg': use 0 (plain VGG),
    1, 2 or 3 (att1-att3).

The rules, in the order they are checked:

* fields: every field of the base config (`ltpa_jax/configs/default.py`) is there, no other
  exists (a misspelt name gets a suggestion), and each holds the type of its default;
* choices: each string field holds one of the values its module's `Literal` allows;
* numbers: each numeric field is in its possible range (learning rate finite and > 0, momentum
  in [0, 1), intervals > 0, ...);
* combinations: what the backbone allows (`num_taps`, `tap_position`, `depth`, `batch_norm`),
  `model.num_classes` against the dataset (an image folder: its layout, files and masks, read
  by `data.image_folder.scan`), batch sizes against the devices and hosts, bfloat16
  with XLA's convolution on the CPU.

The modules (models, data, training loop) trust a config that passed, and do not check it again.
"""

import dataclasses
import difflib
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, get_args

import jax
import ml_collections

from ltpa_jax import attention, presets
from ltpa_jax.configs import default

BASE_CONFIG_FILE = "ltpa_jax/configs/default.py"


class ConfigError(ValueError):
    """A config field that does not exist, or holds an impossible value.

    The message is one line: the field (as on the command line), its value, and the fix.
    """


# --------------------------------------------------------------------------------------------
# Public checks.


def check_config(config: ml_collections.ConfigDict) -> None:
    """Checks a whole experiment config (see ltpa_jax/configs/default.py).

    Checks the field names and types at every depth, every choice and number, the model against
    its backbone and the dataset, and the batch sizes against `jax.device_count()` and
    `jax.process_count()`. Reads no data and builds nothing.

    Raises:
      ConfigError: the first rule broken, naming field, value and fix.
    """
    _check_fields(config, default.get_config(), "config")
    _check_model(config.model)
    _check_training(config)
    _check_dataset(config)
    _check_devices(config)


def check_model_config(config: ml_collections.ConfigDict) -> None:
    """Checks what `create_model` reads: a model section alone, or a whole config.

    For a model section: its field names and types, choices and numbers, and what the backbone
    allows. For a whole config: also every field name and type of the config, and
    `config.remat`; the dataset, the devices and the training numbers are `check_config`'s.

    Raises:
      ConfigError: the first rule broken, named as on the command line
        (`config.model.num_taps=...`).
    """
    if "model" in config:
        _check_fields(config, default.get_config(), "config")
        _check_model(config.model)
        _check_choice("config.remat", config.remat, _remat_modes())
    else:
        _check_fields(config, default.get_model_config(), "config.model")
        _check_model(config)


def unknown_field_error(field: str, value: Any = dataclasses.MISSING) -> ConfigError:
    """The error for a field that the base config does not have, with the nearest real name.

    The same message whether the field comes from a config file or the command line (e.g. an
    override `--config.model.num_tap=3` that ml_collections refuses with an AttributeError).

    Args:
      field: the dotted name, with or without the leading "config." ("model.num_tap").
      value: the value given to it, if known.
    """
    path = field if field.startswith("config.") else f"config.{field}"
    guess = _nearest_field(path, default.get_config())
    hint = f" (did you mean {guess}?)" if guess else ""
    given = f"{path}={value!r}" if value is not dataclasses.MISSING else path
    return ConfigError(
        f"unknown config field {path}{hint}: {given} is not a field of {BASE_CONFIG_FILE}; "
        "correct the name or remove it."
    )


# --------------------------------------------------------------------------------------------
# Field names and types.


def _check_fields(config: Mapping, base: ml_collections.ConfigDict, path: str) -> None:
    """Names and types of `config` against `base` (the defaults), at every depth."""
    for key, value in config.items():
        if key not in base:
            raise unknown_field_error(f"{path}.{key}", value)
    for key, base_value in base.items():
        field = f"{path}.{key}"
        if key not in config:
            raise ConfigError(
                f"config field {field} is missing (its default is {base_value!r}): every config "
                f"has the fields of {BASE_CONFIG_FILE}; start from its get_config()."
            )
        value = config[key]
        if isinstance(base_value, ml_collections.ConfigDict):
            if not hasattr(value, "items"):
                raise ConfigError(
                    f"{field}={value!r} must be a section of fields, as in {BASE_CONFIG_FILE}; "
                    f"set its fields one by one, e.g. --{field}.{next(iter(base_value))}=..."
                )
            _check_fields(value, base_value, field)
            continue
        kind = _type_name(base_value)
        if kind is not None and not _has_type(value, base_value):
            raise ConfigError(
                f"{field}={value!r} must be {kind}, as its default {base_value!r}; "
                f"e.g. --{field}={_flag_value(base_value)}."
            )


def _type_name(base_value: Any) -> str | None:
    if isinstance(base_value, bool):
        return "True or False"
    if isinstance(base_value, numbers.Integral):
        return "an integer"
    if isinstance(base_value, numbers.Real):
        return "a number"
    if isinstance(base_value, str):
        return "a string"
    if isinstance(base_value, tuple | list):
        return "a tuple"
    return None


def _has_type(value: Any, base_value: Any) -> bool:
    is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"
    if isinstance(base_value, bool):
        return is_bool
    if isinstance(base_value, numbers.Integral):
        return isinstance(value, numbers.Integral) and not is_bool
    if isinstance(base_value, numbers.Real):
        return isinstance(value, numbers.Real) and not is_bool
    if isinstance(base_value, str):
        return isinstance(value, str)
    if isinstance(base_value, tuple | list):
        return isinstance(value, tuple | list)
    return True


def _flag_value(value: Any) -> str:
    """`value` as written after `--config.field=` on a command line."""
    if isinstance(value, tuple | list):
        return repr(str(tuple(value)))
    if isinstance(value, str):
        return value if value else "''"
    return str(value)


def _all_fields(base: ml_collections.ConfigDict, path: str = "config") -> list[str]:
    out = []
    for key, value in base.items():
        out.append(f"{path}.{key}")
        if isinstance(value, ml_collections.ConfigDict):
            out += _all_fields(value, f"{path}.{key}")
    return out


def _nearest_field(path: str, base: ml_collections.ConfigDict) -> str | None:
    """The real field a misspelt or misplaced `path` most likely means, or None."""
    fields = _all_fields(base)
    parent, _, key = path.rpartition(".")
    same_name = [f for f in fields if f.rpartition(".")[2] == key]  # In another section.
    if same_name:
        return same_name[0]
    siblings = [f.rpartition(".")[2] for f in fields if f.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if close:
        return f"{parent}.{close[0]}"
    by_name = {f.rpartition(".")[2]: f for f in reversed(fields)}
    close = difflib.get_close_matches(key, list(by_name), n=1, cutoff=0.75)
    return by_name[close[0]] if close else None


# --------------------------------------------------------------------------------------------
# Choices and numbers.


def _check_choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"{field}={value!r} is not a valid choice{hint}; use one of {choices}, "
        f"e.g. --{field}={(close or choices)[0]}."
    )


@dataclasses.dataclass(frozen=True)
class _Range:
    """A numeric field's possible values: `holds(value)`, said as `requirement`."""

    holds: Callable[[Any], bool]
    requirement: str
    example: str


def _finite(value: Any) -> bool:
    return math.isfinite(value)


_TRAINING_RANGES = {
    "image_size": _Range(
        lambda v: v > 0 and v % 32 == 0,
        "must be a positive multiple of 32 (the network halves the resolution five times)",
        "32 (CIFAR/SVHN), 64 (cluttered_digits), 224 or 96 (CUB)",
    ),
    "crop_padding": _Range(lambda v: v >= 0, "must be >= 0 pixels (0: no padding)", "4"),
    "shuffle_buffer": _Range(
        lambda v: v >= 1, "must be at least 1 example (1: no shuffle)", "50000"
    ),
    "num_digits_train": _Range(lambda v: v >= 1, "must be at least 1 image", "10000"),
    "num_digits_test": _Range(lambda v: v >= 1, "must be at least 1 image", "2000"),
    "image_folder_test_fraction": _Range(
        lambda v: 0 <= v <= 1,
        "must be in [0, 1] (0: the folder's train/ and test/ sub-folders; else the share of "
        "each class that is the test split)",
        "0.2",
    ),
    "num_epochs": _Range(lambda v: v >= 0, "must be >= 0 epochs", "300"),
    "passes_per_epoch": _Range(
        lambda v: v >= 1,
        "must be at least 1 pass over the training split per epoch (the reference's: 3)",
        "3",
    ),
    "learning_rate": _Range(
        lambda v: _finite(v) and v > 0,
        "must be a finite number > 0 (at 0 or below nothing trains; too large a rate diverges)",
        "0.1",
    ),
    "lr_decay_factor": _Range(
        lambda v: 0 < v <= 1,
        "must be in (0, 1] (0.5 halves the rate at each decay, 1 keeps it)",
        "0.5",
    ),
    "lr_decay_every_epochs": _Range(
        lambda v: v >= 0, "must be >= 0 epochs (0: no periodic decay)", "25"
    ),
    "warmup_epochs": _Range(
        lambda v: _finite(v) and v >= 0, "must be a finite number of epochs >= 0 (0: none)", "0"
    ),
    "momentum": _Range(lambda v: 0 <= v < 1, "must be in [0, 1) (0: plain SGD)", "0.9"),
    "weight_decay": _Range(
        lambda v: _finite(v) and v >= 0, "must be a finite number >= 0 (0: none)", "5e-4"
    ),
    "seed": _Range(lambda v: -(2**63) <= v < 2**63, "must fit in a signed 64-bit integer", "0"),
    "log_every_steps": _Range(lambda v: v > 0, "must be a positive number of steps", "100"),
    "eval_every_steps": _Range(lambda v: v > 0, "must be a positive number of steps", "2000"),
    "checkpoint_every_steps": _Range(lambda v: v > 0, "must be a positive number of steps", "2000"),
    "keep_checkpoints": _Range(lambda v: v >= 1, "must be at least 1", "3"),
    "input_on_device_max_fraction": _Range(
        lambda v: _finite(v) and 0 < v <= 1, "must be in (0, 1] (a share of one device)", "0.25"
    ),
    "steps_per_dispatch": _Range(lambda v: v >= 1, "must be at least 1 step", "1"),
    "num_picture_images": _Range(
        lambda v: v >= 0, "must be >= 0 images (0: no attention pictures)", "16"
    ),
}

_MODEL_RANGES = {
    "num_classes": _Range(lambda v: v >= 1, "must be at least 1 (the dataset's classes)", "100"),
    "width": _Range(
        lambda v: _finite(v) and v > 0,
        "must be a finite number > 0 (1.0 = the paper's widths)",
        "1.0",
    ),
    "squeeze_excitation": _Range(
        lambda v: v >= 0, "must be >= 0 (0: off; else the SE reduction ratio r)", "16"
    ),
    "self_attention_kernel": _Range(
        lambda v: v >= 0 and (v == 0 or v % 2 == 1),
        "must be 0 (off) or an odd extent k (the k x k neighbourhood is centred on each position)",
        "7",
    ),
    "self_attention_heads": _Range(lambda v: v >= 1, "must be at least 1 head", "8"),
}


def _check_ranges(section: Mapping, ranges: Mapping[str, _Range], path: str) -> None:
    for key, rule in ranges.items():
        value = section[key]
        if not rule.holds(value):
            raise ConfigError(
                f"{path}.{key}={value!r} {rule.requirement}; e.g. --{path}.{key}={rule.example}."
            )


# --------------------------------------------------------------------------------------------
# The model section.


def _remat_modes() -> tuple[str, ...]:
    from ltpa_jax.models import remat  # Here: the models import this module.

    return remat.REMAT_MODES


def _check_model(m: ml_collections.ConfigDict) -> None:
    """Choices, numbers and what the backbone allows, for a model section of the right types."""
    from ltpa_jax.models import Backbone, conv, resnet, spec, vgg  # The models import this.

    path = "config.model"
    _check_choice(f"{path}.preset", m.preset, presets.PRESETS)
    _check_choice(f"{path}.backbone", m.backbone, get_args(Backbone))
    _check_choice(f"{path}.compatibility", m.compatibility, attention.COMPATIBILITIES)
    _check_choice(f"{path}.normalization", m.normalization, attention.NORMALIZATIONS)
    _check_choice(f"{path}.projection", m.projection, attention.PROJECTIONS)
    _check_choice(f"{path}.head", m.head, spec.HEADS)
    _check_choice(f"{path}.tap_position", m.tap_position, spec.TAP_POSITIONS)
    _check_choice(f"{path}.conv_impl", m.conv_impl, conv.CONV_IMPLS)
    _check_ranges(m, _MODEL_RANGES, path)
    _check_preset(m, path)
    if m.backbone in ("agcnn", "ram"):
        _check_other_mechanism(m, path)
        return
    _check_self_attention(m, path)
    if m.backbone == "vgg":
        if not 0 <= m.num_taps <= len(vgg.TAP_NAMES):
            raise ConfigError(
                f"{path}.num_taps={m.num_taps} is not possible for {path}.backbone='vgg': use 0 "
                "(plain VGG), 1, 2 or 3 (att1-att3)."
            )
        return
    if not resnet.is_valid_depth(m.depth):
        raise ConfigError(
            f"{path}.depth={m.depth!r} is not a bottleneck ResNet depth: use 9n + 2 with n >= 1 "
            "bottleneck blocks per stage, e.g. 11, 20, 29, 56, 110 or 164 (the paper's)."
        )
    if not 0 <= m.num_taps <= len(resnet.TAP_NAMES):
        raise ConfigError(
            f"{path}.num_taps={m.num_taps} is not possible for {path}.backbone='resnet': use 0 "
            "(plain ResNet), 1 (att2: end of stage 3) or 2 (RN-att2: att1 = end of stage 2, "
            "att2 = end of stage 3)."
        )
    if m.tap_position not in resnet.TAP_POSITIONS:
        raise ConfigError(
            f"{path}.tap_position={m.tap_position!r} does not exist for {path}.backbone='resnet' "
            f"(no max-pool follows its taps); use one of {resnet.TAP_POSITIONS}."
        )
    if not m.batch_norm:
        raise ConfigError(
            f"{path}.batch_norm=False is not possible for {path}.backbone='resnet' (batch norm "
            f"is part of every pre-activation block); use --{path}.batch_norm=True."
        )


_AGCNN_RANGES = {
    "agcnn_threshold": _Range(
        lambda v: _finite(v) and 0 <= v < 1,
        "must be in [0, 1) (the heat map is scaled to [0, 1]; the paper's: 0.7)",
        "0.7",
    ),
    "agcnn_crop_size": _Range(
        lambda v: v >= 0 and v % 4 == 0,
        "must be 0 (the input's side) or a positive multiple of 4 (the branch pools twice)",
        "32",
    ),
}

_RAM_RANGES = {
    "ram_num_glimpses": _Range(lambda v: v >= 1, "must be at least 1 glimpse", "6"),
    "ram_glimpse_size": _Range(lambda v: v >= 1, "must be at least 1 pixel", "8"),
    "ram_num_scales": _Range(lambda v: 1 <= v <= 8, "must be 1 to 8 patches", "3"),
    "ram_hidden_size": _Range(lambda v: v >= 2, "must be at least 2 units", "256"),
    "ram_location_std": _Range(
        lambda v: _finite(v) and v > 0,
        "must be a finite number > 0 (in [-1, 1] image units)",
        "0.1",
    ),
}


def _check_preset(m: ml_collections.ConfigDict, path: str) -> None:
    """The official preset builds only what the official code has: a VGG or a ResNet, with BN."""
    if m.preset != "official":
        return
    if m.backbone not in ("vgg", "resnet"):
        raise ConfigError(
            f"{path}.preset='official' does not exist for {path}.backbone={m.backbone!r} (the "
            f"official code has the VGG and the ResNet only); use --{path}.preset=reference."
        )
    if not m.batch_norm:
        raise ConfigError(
            f"{path}.batch_norm=False is not possible with {path}.preset='official' (every "
            f"official network has batch norm); use --{path}.batch_norm=True or "
            f"--{path}.preset=reference."
        )


def _check_other_mechanism(m: ml_collections.ConfigDict, path: str) -> None:
    """AG-CNN and RAM: their own fields; the VGG/ResNet blocks they do not have are off."""
    _check_ranges(m, _AGCNN_RANGES if m.backbone == "agcnn" else _RAM_RANGES, path)
    for field in ("squeeze_excitation", "self_attention_kernel"):
        if m.get(field):
            raise ConfigError(
                f"{path}.{field}={m[field]} is not possible for {path}.backbone="
                f"{m.backbone!r} (a block of the VGG and the ResNet only); use --{path}.{field}=0."
            )


def _check_self_attention(m: ml_collections.ConfigDict, path: str) -> None:
    """The layers that self-attention replaces split into heads of an even width."""
    if not m.self_attention_kernel:
        return
    from ltpa_jax.models import resnet, vgg  # The models import this module.

    replaced = vgg.STAGES[-1][0][0] if m.backbone == "vgg" else resnet.STAGE_WIDTHS[-1]
    channels = vgg.scaled(replaced, m.width)
    if channels % (2 * m.self_attention_heads):
        fits = [h for h in (8, 4, 2, 1) if channels % (2 * h) == 0]
        raise ConfigError(
            f"{path}.self_attention_heads={m.self_attention_heads} does not divide the "
            f"{channels} channels of the self-attention layers ({path}.backbone="
            f"{m.backbone!r}, width {m.width}) into heads of an even width (half for the row "
            "offsets, half for the columns); use "
            + (f"--{path}.self_attention_heads={fits[0]}." if fits else "a larger model.width.")
        )


# --------------------------------------------------------------------------------------------
# The rest of an experiment config.


def _check_training(config: ml_collections.ConfigDict) -> None:
    """Choices and numbers of the data, optimisation, logging and checkpoint fields."""
    from ltpa_jax.data import transforms  # Here: it imports TensorFlow.

    padding_modes = get_args(transforms.CropPaddingMode)
    _check_choice("config.crop_padding_mode", config.crop_padding_mode, padding_modes)
    _check_choice("config.remat", config.remat, _remat_modes())
    _check_choice("config.input_on_device", config.input_on_device, ("auto", "on", "off"))
    _check_ranges(config, _TRAINING_RANGES, "config")
    _check_steps_per_dispatch(config)
    if config.crop_padding_mode == "reflect" and config.crop_padding >= config.image_size:
        raise ConfigError(
            f"config.crop_padding={config.crop_padding} with config.crop_padding_mode='reflect' "
            f"must be below config.image_size={config.image_size} (a mirror cannot reach "
            "further than the image); e.g. --config.crop_padding=4."
        )
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise ConfigError(
            f"config.num_epochs={config.num_epochs} and config.num_train_steps="
            f"{config.num_train_steps}: nothing to train; set --config.num_epochs > 0 (e.g. 300) "
            "or --config.num_train_steps > 0."
        )
    for epoch in config.lr_decay_at_epochs:
        if (
            not isinstance(epoch, numbers.Real)
            or isinstance(epoch, bool)
            or not 0 <= epoch < math.inf
        ):
            raise ConfigError(
                f"config.lr_decay_at_epochs={tuple(config.lr_decay_at_epochs)!r} must hold "
                f"epochs >= 0 (numbers, may be fractional), not {epoch!r}; e.g. "
                "--config.lr_decay_at_epochs='(60, 120, 160)', or () to decay every "
                "config.lr_decay_every_epochs."
            )
    factors = tuple(config.lr_decay_factors)
    if factors and (
        len(factors) != len(config.lr_decay_at_epochs)
        or not all(
            isinstance(f, numbers.Real) and not isinstance(f, bool) and 0 < f < math.inf
            for f in factors
        )
    ):
        raise ConfigError(
            f"config.lr_decay_factors={factors!r} must hold one finite factor > 0 per entry of "
            f"config.lr_decay_at_epochs={tuple(config.lr_decay_at_epochs)!r}; e.g. "
            "--config.lr_decay_factors='(0.2, 0.2, 0.2)', or () to use config.lr_decay_factor "
            "at each decay."
        )
    if config.half_precision and jax.default_backend() == "cpu" and config.model.conv_impl == "xla":
        raise ConfigError(
            "config.half_precision=True with config.model.conv_impl='xla' on the CPU: XLA "
            "(jax 0.12) computed NaN logits for this network's jitted bfloat16 eval pass with its "
            "own convolution. Use --config.model.conv_impl=auto (winograd on the CPU), or float32."
        )


def _check_steps_per_dispatch(config: ml_collections.ConfigDict) -> None:
    """k steps per dispatch: the loop acts between dispatches, and only on the device path."""
    k = config.steps_per_dispatch
    if k == 1:
        return
    if config.input_on_device == "off":
        raise ConfigError(
            f"config.steps_per_dispatch={k} needs the device input path, and "
            "config.input_on_device='off'; use --config.input_on_device=auto or "
            "--config.steps_per_dispatch=1."
        )
    for field in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
        if config[field] % k:
            raise ConfigError(
                f"config.{field}={config[field]} must be a multiple of "
                f"config.steps_per_dispatch={k} (the loop logs, evaluates and saves between "
                f"dispatches); e.g. --config.{field}={max(k, config[field] // k * k)}."
            )


def _check_dataset(config: ml_collections.ConfigDict) -> None:
    """The dataset exists (an image folder: its layout and files), and the model has as many
    classes as it."""
    from ltpa_jax.data import registry  # Here: importing the data package is not free.

    names = tuple(sorted(registry.DATASETS))
    if config.dataset not in registry.DATASETS:
        close = difflib.get_close_matches(config.dataset, names, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"config.dataset={config.dataset!r} is not a known dataset{hint}; use one of "
            f"{names}, e.g. --config.dataset={(close or names)[0]}."
        )
    info = registry.DATASETS[config.dataset]
    if info.source == "image_folder":
        _check_image_folder(config)
    elif config.image_folder or config.image_folder_masks:
        field = "image_folder" if config.image_folder else "image_folder_masks"
        raise ConfigError(
            f"config.{field}={config[field]!r} is read only with config.dataset='image_folder', "
            f"and config.dataset={config.dataset!r}; set --config.dataset=image_folder to train "
            f"on the folder, or leave config.{field} empty."
        )
    elif config.model.num_classes != info.num_classes:
        raise ConfigError(
            f"config.model.num_classes={config.model.num_classes} but dataset {info.name!r} has "
            f"{info.num_classes} classes; set --config.model.num_classes={info.num_classes}."
        )
    from ltpa_jax.data import device

    if not device.supports(info, config.image_size):
        needs = "config.input_on_device='on'" if config.input_on_device == "on" else None
        if config.steps_per_dispatch > 1 and config.input_on_device != "off":
            needs = f"config.steps_per_dispatch={config.steps_per_dispatch}"
        if needs:
            raise ConfigError(
                f"{needs} needs the device input path, which holds only datasets stored at the "
                "input size with pad-and-crop augmentation (CIFAR-10/100, SVHN at 32, STL-10 at "
                f"96), not {info.name!r} at {config.image_size}; use "
                "--config.input_on_device=auto and --config.steps_per_dispatch=1."
            )


def _check_image_folder(config: ml_collections.ConfigDict) -> None:
    """The image folder's layout, files and masks, and the model's classes against it."""
    from ltpa_jax.data import image_folder  # Here: importing the data package is not free.

    try:
        folder = image_folder.from_config(config)
    except image_folder.ImageFolderError as error:
        raise ConfigError(str(error)) from error
    count = len(folder.class_names)
    if config.model.num_classes != count:
        names = ", ".join(folder.class_names[:5]) + (", ..." if count > 5 else "")
        raise ConfigError(
            f"config.model.num_classes={config.model.num_classes} but config.image_folder="
            f"{config.image_folder!r} has {count} classes ({names}); set "
            f"--config.model.num_classes={count}."
        )


def _check_devices(config: ml_collections.ConfigDict) -> None:
    """Global batch sizes split evenly over the devices and the hosts."""
    devices, hosts = jax.device_count(), jax.process_count()
    for field in ("batch_size", "eval_batch_size"):
        value = config[field]
        if value <= 0 or value % devices or value % hosts:
            raise ConfigError(
                f"config.{field}={value} must be a positive multiple of the number of devices "
                f"({devices}) and hosts ({hosts}); e.g. --config.{field}="
                f"{max(devices, (max(value, 1) // devices) * devices)}."
            )
