"""The device-resident input path: same batches as the host path, exact resume, scanned steps.

Runs with 8 forced CPU devices (conftest.py): device batches are sharded over all of them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import smoke
from ltpa_jax import checkpointing, rundir, train, validation
from ltpa_jax import data as data_lib
from ltpa_jax.data import augment, device, get_dataset_info
from ltpa_jax.models import create_model

CIFAR = get_dataset_info("cifar10")


def random_split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, n).astype(np.int32)


def spec(batch_size: int = 16, **overrides) -> device.TrainSpec:
    fields = dict(
        batch_size=batch_size,
        seed=3,
        augment=True,
        padding=4,
        mode="constant",
        flip=True,
        mean=CIFAR.mean,
        std=CIFAR.std,
    )
    return device.TrainSpec(**{**fields, **overrides})


def numpy_batch(images, labels, step, s: device.TrainSpec):
    """The batch of `step` written out with NumPy: order, pad, crop, flip, normalise."""
    steps_per_epoch = len(labels) // s.batch_size
    epoch, i = divmod(step, steps_per_epoch)
    order = np.asarray(augment.epoch_permutation(s.seed, epoch, len(labels)))
    idx = order[i * s.batch_size : (i + 1) * s.batch_size]
    offsets, flips = map(
        np.asarray,
        augment.example_augmentation(s.seed, epoch, idx, padding=s.padding, flip=s.flip),
    )
    pad = ((s.padding, s.padding), (s.padding, s.padding), (0, 0))
    out = []
    for k, j in enumerate(idx):
        padded = np.pad(images[j], pad, mode=s.mode)
        crop = padded[offsets[k, 0] : offsets[k, 0] + 32, offsets[k, 1] : offsets[k, 1] + 32]
        out.append(crop[:, ::-1] if flips[k] else crop)
    x = (np.stack(out).astype(np.float32) / 255.0 - np.float32(s.mean)) / np.float32(s.std)
    return x, labels[idx]


def test_epoch_permutation_is_a_permutation_of_seed_and_epoch():
    order = np.asarray(augment.epoch_permutation(0, 0, 1000))
    assert order.dtype == np.int32 and sorted(order) == list(range(1000))
    assert not np.array_equal(order, np.asarray(augment.epoch_permutation(0, 1, 1000)))
    assert not np.array_equal(order, np.asarray(augment.epoch_permutation(1, 0, 1000)))
    np.testing.assert_array_equal(order, np.asarray(augment.epoch_permutation(0, 0, 1000)))


def test_example_augmentation_depends_on_the_example_not_its_position():
    indices = np.array([5, 17, 900, 3])
    offsets, flips = augment.example_augmentation(7, 2, indices, padding=4, flip=True)
    again, flips_again = augment.example_augmentation(7, 2, indices[::-1], padding=4, flip=True)
    np.testing.assert_array_equal(offsets, np.asarray(again)[::-1])
    np.testing.assert_array_equal(flips, np.asarray(flips_again)[::-1])
    many, _ = augment.example_augmentation(7, 2, np.arange(4000), padding=4, flip=True)
    assert np.asarray(many).min() == 0 and np.asarray(many).max() == 8
    _, no_flips = augment.example_augmentation(7, 2, np.arange(100), padding=4, flip=False)
    assert not np.asarray(no_flips).any()


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_pad_crop_flip_matches_numpy(mode):
    images, _ = random_split(6)
    offsets = np.array([[0, 0], [8, 8], [3, 5], [8, 0], [4, 4], [1, 7]], np.int32)
    flips = np.array([False, True, True, False, False, True])
    out = np.asarray(augment.pad_crop_flip(images, offsets, flips, padding=4, mode=mode))
    assert out.dtype == np.uint8
    for k in range(6):
        padded = np.pad(images[k], ((4, 4), (4, 4), (0, 0)), mode=mode)
        crop = padded[offsets[k, 0] : offsets[k, 0] + 32, offsets[k, 1] : offsets[k, 1] + 32]
        np.testing.assert_array_equal(out[k], crop[:, ::-1] if flips[k] else crop)


def test_device_batches_are_the_numpy_batches_across_an_epoch_boundary():
    images, labels = random_split(40)  # 2 steps per epoch at batch 16 (8 examples dropped).
    s = spec(16, mode="reflect")
    data = device.DeviceTrainData(images, labels, mesh=train.create_mesh(), spec=s)
    assert data.steps_per_epoch == 2
    for step in range(4):  # The first steps of two epochs.
        batch = data.batch(step)
        assert batch["image"].sharding.spec == P("data")
        assert len(batch["image"].sharding.device_set) == 8
        x, y = numpy_batch(images, labels, step, s)
        np.testing.assert_array_equal(np.asarray(batch["label"]), y)
        np.testing.assert_allclose(np.asarray(batch["image"]), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_device_batches_equal_host_batches_on_mock_cifar(mode):
    config = smoke.get_config()  # cifar10, batch 16.
    config.crop_padding_mode = mode
    config.eval_batch_size = 16
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        pipeline = data_lib.Pipeline.from_config(config)
        assert pipeline.supports_device_input and pipeline.steps_per_epoch == 2
        host = [b for b, _ in zip(pipeline.train_batches(0), range(4), strict=False)]
        resumed = [b for b, _ in zip(pipeline.train_batches(3), range(1), strict=False)]
        host_eval = list(pipeline.eval_batches("test"))
        arrays = {split: pipeline.split_arrays(split) for split in ("train", "test")}
    mesh = train.create_mesh()
    on_device = device.DeviceTrainData(
        arrays["train"]["image"],
        arrays["train"]["label"],
        mesh=mesh,
        spec=device.TrainSpec.from_config(config, pipeline.info),
    )
    for step in range(4):  # The first two steps of two epochs: same examples, crops, flips.
        batch = jax.device_get(on_device.batch(step))
        np.testing.assert_array_equal(batch["label"], host[step]["label"])
        np.testing.assert_allclose(batch["image"], host[step]["image"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(resumed[0]["image"], host[3]["image"])
    assert not np.array_equal(host[0]["image"], host[2]["image"])

    on_device_eval = device.DeviceEvalData(
        arrays["test"]["image"],
        arrays["test"]["label"],
        mesh=mesh,
        batch_size=config.eval_batch_size,
        mean=pipeline.info.mean,
        std=pipeline.info.std,
    )
    device_eval = [jax.device_get(b) for b in on_device_eval.batches()]
    assert len(device_eval) == len(host_eval) == 3
    for a, b in zip(device_eval, host_eval, strict=True):
        np.testing.assert_array_equal(a["mask"], b["mask"])
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_allclose(a["image"], b["image"], rtol=0, atol=1e-6)


def test_device_stream_resumed_at_a_step_is_the_uninterrupted_stream():
    images, labels = random_split(48)
    data = device.DeviceTrainData(images, labels, mesh=train.create_mesh(), spec=spec(16))
    full = [jax.device_get(b) for b, _ in zip(data.batches(0), range(7), strict=False)]
    resumed = [jax.device_get(b) for b, _ in zip(data.batches(4), range(3), strict=False)]
    for a, b in zip(full[4:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(full[0]["label"], full[3]["label"])


def test_no_augmentation_only_orders_and_normalises():
    images, labels = random_split(32)
    s = spec(16, augment=False)
    data = device.DeviceTrainData(images, labels, mesh=train.create_mesh(), spec=s)
    idx = np.asarray(augment.epoch_permutation(s.seed, 0, 32))[16:32]
    expected = (images[idx] / np.float32(255) - np.float32(s.mean)) / np.float32(s.std)
    np.testing.assert_allclose(np.asarray(data.batch(1)["image"]), expected, atol=1e-6)


def test_eval_batches_cover_the_split_once_with_the_padded_rows_masked():
    images, labels = random_split(40)
    data = device.DeviceEvalData(
        images, labels, mesh=train.create_mesh(), batch_size=16, mean=CIFAR.mean, std=CIFAR.std
    )
    batches = [jax.device_get(b) for b in data.batches()]
    assert len(batches) == 3
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(mask, np.arange(48) < 40)
    got = np.concatenate([b["label"] for b in batches])[:40]
    np.testing.assert_array_equal(got, labels)
    x = np.concatenate([b["image"] for b in batches])
    expected = (images / np.float32(255) - np.float32(CIFAR.mean)) / np.float32(CIFAR.std)
    np.testing.assert_allclose(x[:40], expected, atol=1e-6)
    assert not x[40:].any()  # Padded rows are zeros, as the host path's.


def test_memory_budget_refuses_a_split_that_does_not_fit_naming_the_field():
    images, labels = random_split(64)
    with pytest.raises(device.DeviceMemoryError, match=r"config\.input_on_device"):
        device.DeviceTrainData(
            images, labels, mesh=train.create_mesh(), spec=spec(16), max_fraction=1e-9
        )
    with pytest.raises(ValueError, match="--config.input_on_device=off"):
        device.check_fits(2**40)  # A terabyte does not fit a quarter of this machine.
    device.check_fits(images.nbytes)  # 200 kB does.


def test_supports_cifar_and_svhn_at_native_size_only():
    assert device.supports(get_dataset_info("cifar100"), 32)
    assert device.supports(get_dataset_info("svhn_cropped"), 32)
    assert not device.supports(get_dataset_info("cifar100"), 64)
    assert not device.supports(get_dataset_info("caltech_birds2011"), 224)
    assert not device.supports(get_dataset_info("cluttered_digits"), 64)


# ---------------------------------------------------------------------------------------------
# Several steps per dispatch.


@functools.lru_cache(maxsize=1)
def tiny_setup():
    config = smoke.get_config()
    config.model.width = 1 / 32
    config.model.conv_impl = "xla"
    # Small steps: this 2-channel net amplifies rounding (a 1e-7 relative change of the
    # parameters grew to 1e-4 in 3 steps at lr 0.05), and a rolled loop over 8 devices rounds
    # its sums differently from single steps.
    config.learning_rate = 0.002
    mesh = train.create_mesh()
    schedule = train.learning_rate_schedule(config, steps_per_epoch=2)
    model = create_model(config)
    init = jax.jit(
        functools.partial(train.create_train_state, config, model, schedule=schedule),
        out_shardings=NamedSharding(mesh, P()),
    )
    step_fn = functools.partial(train.train_step, schedule=schedule)
    return config, mesh, init, step_fn


def assert_trees_close(a, b, rtol=1e-5, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_scanned_steps_equal_single_steps():
    config, mesh, init, step_fn = tiny_setup()
    images, labels = random_split(48)
    data = device.DeviceTrainData(images, labels, mesh=mesh, spec=spec(16))
    single = jax.jit(step_fn)
    state = init(jax.random.key(0))
    merged = None
    for step in range(3):
        state, m = single(state, data.batch(step))
        merged = m if merged is None else merged.merge(m)
    expected_state, expected_metrics = state, merged.compute()

    state = init(jax.random.key(0))
    run = data.jit_steps(step_fn, num_steps=3)
    state, stacked = run(state, 0)
    assert int(state.step) == 3
    assert_trees_close(state.params, expected_state.params)
    assert_trees_close(state.batch_stats, expected_state.batch_stats)
    assert_trees_close(state.opt_state, expected_state.opt_state)
    got = stacked.reduce().compute()
    for key, value in expected_metrics.items():
        np.testing.assert_allclose(float(got[key]), float(value), rtol=1e-5, atol=1e-6)

    # The same over host batches stacked [k, B, ...].
    state = init(jax.random.key(0))
    batches = [jax.device_get(data.batch(step)) for step in range(3)]
    stacked_batches = jax.tree.map(lambda *xs: np.stack(xs), *batches)
    state, stacked = device.jit_scan_steps(step_fn, mesh)(state, stacked_batches)
    assert_trees_close(state.params, expected_state.params)
    np.testing.assert_allclose(
        float(stacked.reduce().compute()["loss"]), float(expected_metrics["loss"]), rtol=1e-5
    )


def test_resumed_scanned_training_equals_uninterrupted_training():
    _, mesh, init, step_fn = tiny_setup()
    images, labels = random_split(48)
    data = device.DeviceTrainData(images, labels, mesh=mesh, spec=spec(16))
    run1, run2 = data.jit_steps(step_fn, 1), data.jit_steps(step_fn, 2)
    straight = init(jax.random.key(0))
    for first_step in (0, 2, 4):  # 3 steps per epoch: the second dispatch spans two epochs.
        straight, _ = run2(straight, first_step)
    halfway, _ = run1(init(jax.random.key(0)), 0)
    halfway, _ = run2(halfway, 1)
    # "Killed" here: the state goes to the host (as a checkpoint) and back.
    restored = jax.device_put(jax.device_get(halfway), NamedSharding(mesh, P()))
    resumed, _ = run2(restored, 3)
    resumed, _ = run1(resumed, 5)
    assert int(resumed.step) == int(straight.step) == 6
    assert_trees_close(resumed.params, straight.params, rtol=1e-6, atol=1e-7)
    assert_trees_close(resumed.batch_stats, straight.batch_stats, rtol=1e-6, atol=1e-7)


def test_steps_per_dispatch_is_at_most_an_epoch():
    _, mesh, _, step_fn = tiny_setup()
    images, labels = random_split(48)
    data = device.DeviceTrainData(images, labels, mesh=mesh, spec=spec(16))
    with pytest.raises(ValueError, match=r"config\.steps_per_dispatch=4 .* \(3\)"):
        data.jit_steps(step_fn, 4)


def test_device_batches_ignore_jax_default_prng_impl():
    before = np.asarray(augment.epoch_permutation(0, 0, 100))
    with jax.default_prng_impl("rbg"):
        after = np.asarray(augment.epoch_permutation(0, 0, 100))
    np.testing.assert_array_equal(before, after)
    assert jnp.issubdtype(augment.epoch_key(0, 0).dtype, jax.dtypes.prng_key)


# ---------------------------------------------------------------------------------------------
# In the training loop.


def _train_on_mock_cifar(workdir, **fields):
    config = smoke.get_config()  # cifar10, width 1/16, batch 16.
    config.update(
        dict(num_train_steps=6, log_every_steps=2, eval_every_steps=6, checkpoint_every_steps=2)
    )
    # Small steps: see tiny_setup (rounding grows with the rate). Since the reference init draws
    # BN scales from U(0, 1), the two paths' reduction orders drifted 1e-4 apart at lr 0.002.
    config.learning_rate = 0.0005
    config.update(fields)
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        final = train.train_and_evaluate(config, str(workdir))
    return final, checkpointing.load_variables(rundir.checkpoints_of(str(workdir)))


@pytest.mark.slow
def test_training_on_the_device_path_matches_the_host_path(tmp_path, capsys):
    host, host_vars = _train_on_mock_cifar(tmp_path / "host", input_on_device="off")
    on, on_vars = _train_on_mock_cifar(tmp_path / "on", input_on_device="on")
    assert "made on the devices, 1 step(s) per dispatch" in capsys.readouterr().out
    assert host_vars["step"] == on_vars["step"] == 6
    assert_trees_close(on_vars["params"], host_vars["params"], rtol=1e-4, atol=1e-5)
    for key, value in host.items():
        np.testing.assert_allclose(on[key], value, rtol=1e-4, atol=1e-5)
    # Two steps per dispatch (one lax.scan), then the third step alone.
    scanned, scanned_vars = _train_on_mock_cifar(
        tmp_path / "k2", steps_per_dispatch=2, num_train_steps=3, checkpoint_every_steps=2
    )
    assert scanned_vars["step"] == 3 and np.isfinite(scanned["loss"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_on_device": "yes"}, r"config\.input_on_device='yes' is not a valid choice"),
        ({"input_on_device_max_fraction": 0.0}, r"config\.input_on_device_max_fraction=0\.0"),
        ({"steps_per_dispatch": 0}, r"config\.steps_per_dispatch=0 must be at least 1"),
        ({"steps_per_dispatch": 4}, r"config\.log_every_steps=2 must be a multiple of"),
        (
            {"steps_per_dispatch": 2, "input_on_device": "off"},
            r"config\.steps_per_dispatch=2 needs the device input path",
        ),
        (
            {"input_on_device": "on", "dataset": "cluttered_digits", "image_size": 64},
            r"config\.input_on_device='on' needs the device input path",
        ),
    ],
)
def test_device_input_fields_are_validated_naming_the_field(fields, message):
    config = smoke.get_config()
    config.update(fields)
    if config.dataset == "cluttered_digits":
        config.model.num_classes = get_dataset_info("cluttered_digits").num_classes
    with pytest.raises(validation.ConfigError, match=message):
        validation.check_config(config)
