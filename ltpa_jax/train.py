"""Data-parallel training and evaluation: pure steps under `jax.jit` over a device mesh.

`train_step` and `eval_step` are pure functions `(state, batch) -> (state, metrics)` and
`(state, batch) -> metrics`. `train_and_evaluate` jits them once over a 1-D `Mesh` named
"data" (batch sharded, state replicated), streams batches from the dataset pipeline,
evaluates, draws attention pictures, checkpoints with Orbax and resumes from the latest intact
checkpoint in the workdir (whose layout `rundir` owns).
"""

import functools
import signal
import sys
import time
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metric_writers, metrics, periodic_actions
from flax.training import train_state
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ltpa_jax import checkpointing, data, rundir, validation, visualize
from ltpa_jax.data import device
from ltpa_jax.inference import forward_jit, upsample_maps
from ltpa_jax.models import create_model


class TrainState(train_state.TrainState):
    """Step, params, optimizer state and batch-norm statistics (a pytree)."""

    batch_stats: Any = None


def _top5(logits: jax.Array, labels: jax.Array, **_) -> jax.Array:
    k = min(5, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Accuracy
    top5_accuracy: metrics.Average.from_fun(_top5)
    learning_rate: metrics.LastValue.from_output("learning_rate")


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Accuracy
    top5_accuracy: metrics.Average.from_fun(_top5)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy, logits [B, K], int labels [B] -> [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def schedule_steps_per_epoch(config: ml_collections.ConfigDict, steps_per_pass: int) -> int:
    """Steps of one schedule epoch: `config.passes_per_epoch` passes over the training split.

    The reference's 300 "epochs" are 3 augmented passes each (`passes_per_epoch=3`);
    `num_epochs`, the decay epochs and `warmup_epochs` count these epochs.

    Args:
      config: the experiment config.
      steps_per_pass: steps of one pass over the training split
        (`data.Pipeline.steps_per_epoch`).
    """
    return steps_per_pass * config.passes_per_epoch


def total_train_steps(config: ml_collections.ConfigDict, steps_per_pass: int) -> int:
    """Steps of the whole run: `num_train_steps` if > 0, else `num_epochs` schedule epochs."""
    if config.num_train_steps > 0:
        return config.num_train_steps
    return config.num_epochs * schedule_steps_per_epoch(config, steps_per_pass)


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """Step decay of the paper's recipes (spec section 6), with optional linear warm-up.

    The rate is multiplied by `lr_decay_factor` (or the matching `lr_decay_factors` entry) at
    the end of each epoch in `lr_decay_at_epochs` or, when that is empty, every
    `lr_decay_every_epochs` epochs. An
    epoch is `config.passes_per_epoch` passes over the training split. Decays happen exactly
    at epoch boundaries (a deliberate difference: the reference's scheduler, stepped at the
    start of each epoch, decays one epoch early; a config that replicates it says so in its
    decay epochs).

    Args:
      config: the experiment config.
      steps_per_epoch: steps of one pass over the training split
        (`data.Pipeline.steps_per_epoch`); multiplied here by `config.passes_per_epoch`.

    Returns:
      `schedule(step) -> learning rate` (pure; works on traced steps).
    """
    steps_per_epoch = schedule_steps_per_epoch(config, steps_per_epoch)
    if config.lr_decay_at_epochs:
        epochs = sorted(float(e) for e in config.lr_decay_at_epochs)
    elif config.lr_decay_every_epochs > 0:
        epochs = list(
            range(config.lr_decay_every_epochs, config.num_epochs, config.lr_decay_every_epochs)
        )
    else:
        epochs = []
    # One factor per decay epoch (config.lr_decay_factors, e.g. the official CUB run's rise then
    # fall), or lr_decay_factor at each.
    factors = list(config.lr_decay_factors) or [config.lr_decay_factor] * len(epochs)
    boundaries = {}
    for epoch, factor in zip(epochs, factors, strict=True):
        step = round(epoch * steps_per_epoch)
        boundaries[step] = boundaries.get(step, 1.0) * factor
    schedule = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    if warmup_steps <= 0:
        return schedule
    warmup = optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
    # Decays stay at absolute epoch boundaries (optax.join_schedules would shift them).
    return lambda step: jnp.where(step < warmup_steps, warmup(step), schedule(step))


class ResetAtDecayState(NamedTuple):
    """State of `reset_at_decay`: the number of updates so far and the wrapped state."""

    count: jax.Array  # int32 [], the index of the next update.
    inner: optax.OptState


def reset_at_decay(inner: optax.GradientTransformation, schedule) -> optax.GradientTransformation:
    """Zeroes the state of `inner` (e.g. a momentum trace) at each step where the rate drops.

    At update `t` with `schedule(t) < schedule(t - 1)` the wrapped state is set to zeros before
    `inner` sees the gradient, so the first step at the lower rate starts a new momentum trace
    from its own gradient, as the official ResNet code does (train_attenunit_2levels.lua makes
    a new optim.sgd state at each drop). Pure: the count is part of the state, so a resumed run
    resets at the same steps, and it works under `jax.jit`.
    """

    def init(params):
        return ResetAtDecayState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        count = state.count
        dropped = (count > 0) & (schedule(count) < schedule(jnp.maximum(count - 1, 0)))
        inner_state = jax.tree.map(lambda x: jnp.where(dropped, jnp.zeros_like(x), x), state.inner)
        updates, inner_state = inner.update(updates, inner_state, params)
        return updates, ResetAtDecayState(optax.safe_increment(count), inner_state)

    return optax.GradientTransformation(init, update)


def create_optimizer(config: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
    """SGD with momentum and L2 weight decay added to the gradient (as torch.optim.SGD).

    With `config.reset_momentum_at_decay` the momentum trace is zeroed at each learning-rate
    drop (`reset_at_decay`); without it the optimizer state is that of `optax.sgd`, as before.
    """
    if not config.reset_momentum_at_decay or config.momentum == 0:
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay),
            optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov),
        )
    momentum = optax.trace(decay=config.momentum, nesterov=config.nesterov)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        reset_at_decay(momentum, schedule),
        optax.scale_by_learning_rate(schedule),
    )


def create_train_state(
    config: ml_collections.ConfigDict, model, rng: jax.Array, schedule
) -> TrainState:
    """Initialises parameters, batch statistics and the optimizer (pure, jit-able)."""
    shape = (1, config.image_size, config.image_size, 3)
    variables = model.init(rng, jnp.zeros(shape, jnp.float32), train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=create_optimizer(config, schedule),
    )


def dropout_key(seed: int, step: jax.Array) -> jax.Array:
    """The dropout randomness of train step `step`: a function of (seed, step) only, so a run
    killed and resumed from a checkpoint draws the same masks as one that was not."""
    return jax.random.fold_in(jax.random.key(seed), step)


def sample_key(seed: int, step: jax.Array) -> jax.Array:
    """The "sample" randomness of train step `step` (RAM's glimpse locations): a function of
    (seed, step) only, as `dropout_key`, from which it differs, so a resumed run draws the same."""
    return jax.random.fold_in(dropout_key(seed, step), 1)


def uses_own_loss(apply_fn) -> bool:
    """Whether a model (`TrainState.apply_fn`, its bound `apply`) has its own training loss.

    Such a model (AG-CNN, RAM) has a method `loss(images, labels, *, train) -> (per-example
    loss [B], logits [B, K])` that `train_step` minimises instead of the cross-entropy of
    its logits, with the same rngs ("dropout", "sample").
    """
    return callable(getattr(getattr(apply_fn, "__self__", None), "loss", None))


def train_step(
    state: TrainState, batch: dict, schedule, seed: int = 0
) -> tuple[TrainState, TrainMetrics]:
    """One SGD step on a global batch.

    Args:
      state: replicated train state.
      batch: "image" [B, S, S, 3] float32, "label" [B] int32 (sharded along B).
      schedule: learning-rate schedule (for reporting only; the optimizer has its own copy).
      seed: `config.seed`; dropout (the official preset) draws from `dropout_key(seed, step)`,
        RAM's sampled locations from `sample_key(seed, step)`.

    The loss is the cross-entropy of the logits, or the model's own (`uses_own_loss`).

    Returns:
      (new state, metrics of this batch).
    """
    rngs = {"dropout": dropout_key(seed, state.step), "sample": sample_key(seed, state.step)}

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        if uses_own_loss(state.apply_fn):  # AG-CNN, RAM: the model family's own loss.
            (losses, logits), updates = state.apply_fn(
                variables,
                batch["image"],
                batch["label"],
                train=True,
                mutable=["batch_stats"],
                rngs=rngs,
                method="loss",
            )
            return losses.mean(), (logits, updates)
        logits, updates = state.apply_fn(
            variables,
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs=rngs,
        )
        return cross_entropy(logits, batch["label"]).mean(), (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
    step_metrics = TrainMetrics.single_from_model_output(
        loss=loss, logits=logits, labels=batch["label"], learning_rate=schedule(state.step)
    )
    return new_state, step_metrics


def eval_step(state: TrainState, batch: dict) -> EvalMetrics:
    """Metrics of one padded evaluation batch ("mask" [B] marks the real rows)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = state.apply_fn(variables, batch["image"], train=False)
    return EvalMetrics.single_from_model_output(
        loss=cross_entropy(logits, batch["label"]),
        logits=logits,
        labels=batch["label"],
        mask=batch["mask"],
    )


def create_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh named "data" over `devices` (default: all devices of all hosts)."""
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(
        np.asarray(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )


def jit_steps(mesh: jax.sharding.Mesh, schedule, seed: int = 0):
    """`train_step` and `eval_step` under `jax.jit`: batch sharded on "data", state replicated.

    The train state argument is donated (its buffers are reused for the new state); `seed`
    (`config.seed`) seeds the dropout of the train step.

    Returns:
      (train_step_fn, eval_step_fn), compiled at their first call.
    """
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))
    train_step_fn = jax.jit(
        functools.partial(train_step, schedule=schedule, seed=seed),
        in_shardings=(replicated, data_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    eval_step_fn = jax.jit(
        eval_step, in_shardings=(replicated, data_sharding), out_shardings=replicated
    )
    return train_step_fn, eval_step_fn


class _PreemptionFlag:
    """Turns SIGTERM (Colab/TPU preemption) into a flag the loop checks between steps."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # Not the main thread: preemption is then the caller's business.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def format_duration(seconds: float) -> str:
    """`00:04:10`, or with days past 24 hours: `1d 08:30:00`; "?" when unknown."""
    if not np.isfinite(seconds):
        return "?"
    days, rest = divmod(int(round(seconds)), 86_400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock


def _progress_line(step: int, total: int, start_step: int, t0: float, scalars: dict) -> str:
    elapsed = time.time() - t0
    rate = (step - start_step) / elapsed if elapsed > 0 else 0.0
    eta = (total - step) / rate if rate > 0 else float("inf")
    shown = "  ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    return (
        f"[{step}/{total} {100 * step / total:3.0f}%] {shown}  {rate:.2f} steps/s  "
        f"ETA {format_duration(eta)}"
    )


def _say(message: str) -> None:
    """Progress for a person at a terminal (and in logs), on process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)


def evaluate(pipeline, state, eval_step_fn, data_sharding, on_device=None) -> dict[str, float]:
    """One pass over the test split (from the devices with `on_device`); the computed metrics."""
    accumulated = None
    if on_device is not None:
        batches = on_device.batches()
    else:
        keys = ("image", "label", "mask")
        batches = (
            data.shard_batch({k: b[k] for k in keys}, data_sharding)
            for b in pipeline.eval_batches("test")
        )
    for batch in batches:
        m = eval_step_fn(state, batch)
        accumulated = m if accumulated is None else accumulated.merge(m)
    return {k: float(v) for k, v in accumulated.compute().items()}


def draw_attention(config, pipeline, model, state, path) -> np.ndarray | None:
    """Draws the attention maps of the first test images as a PNG grid at `path`.

    Returns:
      The picture, uint8 [H, W, 4] (for TensorBoard), or None when there is nothing to draw.
    """
    if config.num_picture_images <= 0:
        return None
    batch = next(iter(pipeline.eval_batches("test")))
    n = min(config.num_picture_images, int(batch["mask"].sum()))
    if n == 0:
        return None
    # Replicated arrays to host memory: the picture is one process's local computation.
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    images = jnp.asarray(batch["image"][:n])
    out = forward_jit(model, variables, images)
    glimpses = getattr(model, "glimpse_locations", None)  # RAM: its glimpse paths, drawn too.
    path = visualize.save_attention_grid(
        path,
        pipeline.denormalize(batch["image"][:n]),
        {k: np.asarray(v) for k, v in upsample_maps(out["maps"], images.shape[1]).items()},
        batch["label"][:n],
        np.asarray(jnp.argmax(out["logits"], -1)),
        pipeline.class_names,
        paths=None if glimpses is None else glimpses(variables, images),
        path_patch=getattr(model, "glimpse_size", 0),
    )
    return visualize.read_png(path)


def _load_init_from(path: str) -> dict:
    """The variables of `config.init_from` (a workdir, its checkpoints/ or one step folder)."""
    try:
        return checkpointing.load_variables(rundir.checkpoints_of(path))
    except (ValueError, OSError) as error:
        raise type(error)(f"config.init_from={path!r}: {error}") from error


def _initial_state(
    config, model, schedule, manager, replicated, pretrained: dict | None
) -> tuple[TrainState, int]:
    """The state to start from: the newest intact checkpoint, else `init_from`, else fresh."""
    init = jax.jit(
        functools.partial(create_train_state, config, model, schedule=schedule),
        out_shardings=replicated,
    )
    state = init(jax.random.key(config.seed))
    state, start_step, notes = checkpointing.restore_latest(manager, state)
    for note in notes:
        _say(f"warning: {note}")
    if start_step:
        _say(f"Resuming from the checkpoint at step {start_step}.")
    elif config.init_from:
        pretrained = pretrained or _load_init_from(config.init_from)
        params, loaded, fresh = checkpointing.merge_pretrained(state.params, pretrained["params"])
        stats, _, _ = checkpointing.merge_pretrained(state.batch_stats, pretrained["batch_stats"])
        state = jax.device_put(state.replace(params=params, batch_stats=stats), replicated)
        _say(checkpointing.report_transfer(config.init_from, pretrained["step"], loaded, fresh))
    return state, start_step


def device_input(config, pipeline, mesh):
    """The splits on the devices (`data.device`) where `config.input_on_device` allows.

    Returns:
        (DeviceTrainData, DeviceEvalData), or None for the host path: "off", a dataset the
        device path does not hold, or ("auto") a split over the memory budget.

    Raises:
        DeviceMemoryError: "on" and a split over `config.input_on_device_max_fraction`.
    """
    if config.input_on_device == "off" or not pipeline.supports_device_input:
        return None  # validation.check_config refused "on" for such a dataset.
    info, fraction = pipeline.info, config.input_on_device_max_fraction
    train_split, test_split = pipeline.split_arrays("train"), pipeline.split_arrays("test")
    try:
        on_device = device.DeviceTrainData(
            train_split["image"],
            train_split["label"],
            mesh=mesh,
            spec=device.TrainSpec.from_config(config, info),
            max_fraction=fraction,
        )
        eval_on_device = device.DeviceEvalData(
            test_split["image"],
            test_split["label"],
            mesh=mesh,
            batch_size=config.eval_batch_size,
            mean=info.mean,
            std=info.std,
            max_fraction=fraction,
        )
    except device.DeviceMemoryError as error:
        if config.input_on_device == "on":
            raise
        _say(f"Batches from the host: {error}")
        return None
    return on_device, eval_on_device


def _diverged(step: int, what: str, value: float, manager, config) -> FloatingPointError:
    """The error that stops a diverging run, before anything of it is saved."""
    manager.wait_until_finished()
    good = manager.latest_step()
    kept = (
        f"The last good checkpoint (step {good}, in {manager.directory}) is kept; rerunning "
        "resumes from it."
        if good is not None
        else "No checkpoint was saved before."
    )
    return FloatingPointError(
        f"training diverged at step {step}: the {what} is {value}. {kept} Lower "
        f"config.learning_rate (now {config.learning_rate}), add config.warmup_epochs, or check "
        "the inputs."
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest intact checkpoint if there is one.

    Nothing is written before the config, the dataset and the workdir are checked. A loss,
    evaluation or state that turns non-finite stops the run before it is saved.

    Returns:
      The final evaluation metrics ("loss", "accuracy", "top5_accuracy").
    """
    validation.check_config(config)
    run_dir = rundir.RunDir.at(workdir)
    run_dir.check_compatible(config)
    pipeline = data.Pipeline.from_config(config)
    mesh = create_mesh()
    replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    steps_per_epoch = pipeline.steps_per_epoch  # One pass over the training split.
    total_steps = total_train_steps(config, steps_per_epoch)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    model = create_model(config)

    pretrained = None  # A fresh run's init_from is read before anything is written.
    if config.init_from and not checkpointing.list_steps(run_dir.checkpoint_dir):
        pretrained = _load_init_from(config.init_from)
    run_dir.create()
    if jax.process_index() == 0:
        for field, (old, new) in run_dir.record_config(config).items():
            _say(f"config.{field} changed since the last run of this workdir: {old!r} -> {new!r}")
    writer = metric_writers.create_default_writer(
        str(run_dir), just_logging=jax.process_index() > 0
    )
    hparams = rundir.flat_config(config)
    writer.write_hparams(
        {k: v if isinstance(v, int | float | str) else str(v) for k, v in hparams.items()}
    )
    for note in checkpointing.clean_partial_checkpoints(run_dir.checkpoint_dir):
        _say(f"warning: {note}")
    manager = checkpointing.create_manager(
        run_dir.checkpoint_dir,
        config.keep_checkpoints,
        config.checkpoint_every_steps,
        keep_best=config.keep_best_checkpoints,
        async_saves=config.async_checkpoints,
    )
    # An error or an interrupt (Ctrl-C, a notebook's stop button) first lets the save in flight
    # finish: a rerun then finds it committed, and no half-written step folder of this run is
    # cleaned away by the next while this one is still writing it.
    with checkpointing.finished_on_error(manager):
        state, start_step = _initial_state(config, model, schedule, manager, replicated, pretrained)
        param_count = sum(x.size for x in jax.tree.leaves(state.params))
        _say(
            f"{config.dataset}: {param_count:,} parameters, {total_steps} steps "
            f"({schedule_steps_per_epoch(config, steps_per_epoch)} per epoch) on "
            f"{jax.device_count()} {jax.devices()[0].platform} device(s); workdir {run_dir}"
        )
        train_step_fn, eval_step_fn = jit_steps(mesh, schedule, config.seed)
        on_device, eval_on_device = device_input(config, pipeline, mesh) or (None, None)
        report_progress = periodic_actions.ReportProgress(
            num_train_steps=total_steps, writer=writer, every_steps=config.log_every_steps
        )

        def evaluate_and_draw(step: int) -> dict[str, float]:
            _say(
                f"[{step}/{total_steps}] evaluating on {pipeline.split_size('test')} test images..."
            )
            t = time.time()
            metrics = evaluate(pipeline, state, eval_step_fn, data_sharding, eval_on_device)
            for name, value in metrics.items():
                if not np.isfinite(value):
                    raise _diverged(step, f"evaluation {name}", value, manager, config)
            writer.write_scalars(step, {f"eval_{k}": v for k, v in metrics.items()})
            shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            _say(f"[{step}/{total_steps}] eval: {shown}  ({time.time() - t:.1f} s)")
            if jax.process_index() == 0:
                picture = draw_attention(config, pipeline, model, state, run_dir.picture_file(step))
                if picture is not None:
                    writer.write_images(step, {"attention_maps": picture[None]})
                    _say(f"[{step}/{total_steps}] attention maps: {run_dir.picture_file(step)}")
            return metrics

        eval_metrics: dict[str, float] = {}
        if start_step >= total_steps:  # A finished run, started again: report, do not retrain.
            _say(f"Already trained for {start_step} of {total_steps} steps; evaluating only.")
            eval_metrics = evaluate_and_draw(start_step)
        _say(f"Reading the training split ({pipeline.num_train_examples} examples)...")
        k = config.steps_per_dispatch
        if on_device is not None:
            _say(f"Training batches made on the devices, {k} step(s) per dispatch.")
            step_fn = functools.partial(train_step, schedule=schedule, seed=config.seed)
            run_steps = {n: on_device.jit_steps(step_fn, n) for n in {1, k}}
        else:
            batches = pipeline.train_batches(start_step=start_step)
        train_metrics, t0, step = None, time.time(), start_step
        with _PreemptionFlag() as preempted:
            while step < total_steps:
                if step == start_step:
                    _say("Compiling the train step...")
                    t = time.time()
                if on_device is not None:
                    # k steps at multiples of k while k remain; single steps to align and to end.
                    n = k if step % k == 0 and step + k <= total_steps else 1
                    state, m = run_steps[n](state, step)
                    m = m.reduce()
                else:
                    batch = data.shard_batch(next(batches), data_sharding)
                    batch = {"image": batch["image"], "label": batch["label"]}
                    if step == start_step:
                        train_step_fn = train_step_fn.lower(state, batch).compile()
                    n = 1
                    state, m = train_step_fn(state, batch)
                if step == start_step:
                    jax.block_until_ready(m)
                    _say(f"Compiled in {time.time() - t:.1f} s.")
                    t0 = time.time()
                for done in range(step + 1, step + n + 1):
                    report_progress(done)
                step += n
                train_metrics = m if train_metrics is None else train_metrics.merge(m)
                if step % config.log_every_steps == 0 or step == total_steps:
                    scalars = {f"train_{k}": float(v) for k, v in train_metrics.compute().items()}
                    if not np.isfinite(scalars["train_loss"]):
                        raise _diverged(
                            step, "training loss", scalars["train_loss"], manager, config
                        )
                    writer.write_scalars(step, scalars)
                    _say(_progress_line(step, total_steps, start_step, t0, scalars))
                    train_metrics = None
                evaluated = step % config.eval_every_steps == 0 or step == total_steps
                if evaluated:
                    eval_metrics = evaluate_and_draw(step)
                final = step == total_steps or preempted.raised
                if final or manager.should_save(step):
                    if not checkpointing.is_finite(state):
                        raise _diverged(step, "train state", "not finite", manager, config)
                    metrics = eval_metrics if evaluated else None  # Ranks checkpoints (keep_best).
                    checkpointing.save(manager, step, state, force=final, metrics=metrics)
                if preempted.raised:
                    manager.wait_until_finished()
                    _say(
                        f"SIGTERM: saved the checkpoint at step {step}; rerun the command to "
                        "resume."
                    )
                    writer.flush()
                    sys.exit(143)
        manager.wait_until_finished()
        manager.close()
        writer.flush()
        if jax.process_index() == 0 and eval_metrics:
            run_dir.write_final_metrics(step, eval_metrics)
        return eval_metrics
