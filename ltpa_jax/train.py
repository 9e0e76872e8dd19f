"""Data-parallel training and evaluation: pure steps under `jax.jit` over a device mesh.

`train_step` and `eval_step` are pure functions `(state, batch) -> (state, metrics)` and
`(state, batch) -> metrics`. `train_and_evaluate` compiles them once over a 1-D `Mesh` named
"data" (batch sharded, state replicated), streams batches, evaluates, draws attention
pictures, checkpoints with Orbax and resumes from the latest checkpoint in the workdir.
"""

import functools
import json
import os
import signal
import sys
import time
from typing import Any

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

from ltpa_jax import checkpointing, input_pipeline, validation, visualize
from ltpa_jax.inference import predict_with_attention
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


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """Step decay of the paper's recipes (spec section 6), with optional linear warm-up.

    The rate is multiplied by `lr_decay_factor` at the end of each epoch in
    `lr_decay_at_epochs` or, when that is empty, every `lr_decay_every_epochs` epochs. Decays
    happen exactly at epoch boundaries (the reference's scheduler decays one epoch early).
    """
    if config.lr_decay_at_epochs:
        epochs = sorted(float(e) for e in config.lr_decay_at_epochs)
    elif config.lr_decay_every_epochs > 0:
        epochs = list(
            range(config.lr_decay_every_epochs, config.num_epochs, config.lr_decay_every_epochs)
        )
    else:
        epochs = []
    boundaries = {round(e * steps_per_epoch): config.lr_decay_factor for e in epochs}
    schedule = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    if warmup_steps <= 0:
        return schedule
    warmup = optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
    # Decays stay at absolute epoch boundaries (optax.join_schedules would shift them).
    return lambda step: jnp.where(step < warmup_steps, warmup(step), schedule(step))


def create_optimizer(config: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
    """SGD with momentum and L2 weight decay added to the gradient (as torch.optim.SGD)."""
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov),
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


def train_step(state: TrainState, batch: dict, schedule) -> tuple[TrainState, TrainMetrics]:
    """One SGD step on a global batch.

    Args:
      state: replicated train state.
      batch: "image" [B, S, S, 3] float32, "label" [B] int32 (sharded along B).
      schedule: learning-rate schedule (for reporting only; the optimizer has its own copy).

    Returns:
      (new state, metrics of this batch).
    """

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
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


def compile_steps(mesh: jax.sharding.Mesh, schedule):
    """`train_step` and `eval_step` jitted over `mesh`: batch sharded on "data", state replicated.

    The train state argument is donated (its buffers are reused for the new state).
    """
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))
    p_train_step = jax.jit(
        functools.partial(train_step, schedule=schedule),
        in_shardings=(replicated, data_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    p_eval_step = jax.jit(
        eval_step, in_shardings=(replicated, data_sharding), out_shardings=replicated
    )
    return p_train_step, p_eval_step


_predict_with_attention = jax.jit(predict_with_attention, static_argnums=0)


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


def _progress_line(step: int, total: int, start_step: int, t0: float, scalars: dict) -> str:
    elapsed = time.time() - t0
    rate = (step - start_step) / elapsed if elapsed > 0 else 0.0
    eta = (total - step) / rate if rate > 0 else float("inf")
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
    shown = "  ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    return (
        f"[{step}/{total} {100 * step / total:3.0f}%] {shown}  {rate:.2f} steps/s  ETA {eta_text}"
    )


def _say(message: str) -> None:
    """Progress for a person at a terminal (and in logs), on process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)


def evaluate(config, state, eval_fn, data_sharding) -> dict[str, float]:
    """One pass over the test split; returns the computed metrics."""
    accumulated = None
    for batch in input_pipeline.eval_batches(config, "test"):
        batch = input_pipeline.shard_batch(
            {k: batch[k] for k in ("image", "label", "mask")}, data_sharding
        )
        m = eval_fn(state, batch)
        accumulated = m if accumulated is None else accumulated.merge(m)
    return {k: float(v) for k, v in accumulated.compute().items()}


def draw_attention(config, model, state, workdir: str, step: int) -> str | None:
    """Saves the attention maps of the first test images as a PNG grid; returns its path."""
    if config.num_picture_images <= 0:
        return None
    batch = next(iter(input_pipeline.eval_batches(config, "test")))
    n = min(config.num_picture_images, int(batch["mask"].sum()))
    if n == 0:
        return None
    # Replicated arrays to host memory: the picture is one process's local computation.
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    images = jnp.asarray(batch["image"][:n])
    logits, maps = _predict_with_attention(model, variables, images)
    path = os.path.join(workdir, "pictures", f"attention_step{step:07d}.png")
    return visualize.save_attention_grid(
        path,
        input_pipeline.denormalize(np.asarray(batch["image"][:n]), config.dataset),
        {k: np.asarray(v) for k, v in maps.items()},
        batch["label"][:n],
        np.asarray(jnp.argmax(logits, -1)),
        input_pipeline.class_names(config),
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

    Returns:
      The final evaluation metrics ("loss", "accuracy", "top5_accuracy").
    """
    validation.check_config(config)
    input_pipeline.check_dataset(config)
    mesh = create_mesh()
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))

    steps_per_epoch = input_pipeline.steps_per_epoch(config)
    total_steps = (
        config.num_train_steps
        if config.num_train_steps > 0
        else config.num_epochs * steps_per_epoch
    )
    schedule = learning_rate_schedule(config, steps_per_epoch)
    model = create_model(config)

    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    manager = checkpointing.create_manager(
        workdir, config.keep_checkpoints, config.checkpoint_every_steps
    )

    init = jax.jit(
        functools.partial(create_train_state, config, model, schedule=schedule),
        out_shardings=replicated,
    )
    state = init(jax.random.key(config.seed))
    state, start_step = checkpointing.restore_latest(manager, state)
    if start_step:
        _say(f"Resuming from the checkpoint at step {start_step} in {workdir}.")
    elif config.init_from:
        pretrained = checkpointing.load_variables(config.init_from)
        params, loaded, fresh = checkpointing.merge_pretrained(state.params, pretrained["params"])
        stats, _, _ = checkpointing.merge_pretrained(state.batch_stats, pretrained["batch_stats"])
        state = jax.device_put(state.replace(params=params, batch_stats=stats), replicated)
        _say(checkpointing.report_transfer(config.init_from, pretrained["step"], loaded, fresh))
    param_count = sum(x.size for x in jax.tree.leaves(state.params))
    _say(
        f"{config.dataset}: {param_count:,} parameters, {total_steps} steps "
        f"({steps_per_epoch} per epoch) on {jax.device_count()} {jax.devices()[0].platform} "
        f"device(s); workdir {os.path.abspath(workdir)}"
    )

    p_train_step, p_eval_step = compile_steps(mesh, schedule)
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=writer, every_steps=config.log_every_steps
    )

    eval_metrics: dict[str, float] = {}
    if start_step >= total_steps:  # A finished run, started again: report, do not retrain.
        _say(f"Already trained for {start_step} of {total_steps} steps; evaluating only.")
        eval_metrics = evaluate(config, state, p_eval_step, data_sharding)
    train_metrics = None
    t0 = time.time()
    batches = input_pipeline.train_batches(config, start_step=start_step)
    with _PreemptionFlag() as preempted:
        step = start_step
        while step < total_steps:
            batch = input_pipeline.shard_batch(next(batches), data_sharding)
            state, m = p_train_step(state, {"image": batch["image"], "label": batch["label"]})
            step += 1
            train_metrics = m if train_metrics is None else train_metrics.merge(m)
            report_progress(step)
            if step % config.log_every_steps == 0 or step == total_steps:
                scalars = {f"train_{k}": float(v) for k, v in train_metrics.compute().items()}
                if not np.isfinite(scalars["train_loss"]):
                    raise FloatingPointError(
                        f"Training loss is {scalars['train_loss']} at step {step}. Lower "
                        "config.learning_rate, add config.warmup_epochs, or check the inputs."
                    )
                writer.write_scalars(step, scalars)
                _say(_progress_line(step, total_steps, start_step, t0, scalars))
                train_metrics = None
            if step % config.eval_every_steps == 0 or step == total_steps:
                eval_metrics = evaluate(config, state, p_eval_step, data_sharding)
                writer.write_scalars(step, {f"eval_{k}": v for k, v in eval_metrics.items()})
                shown = "  ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items())
                _say(f"[{step}/{total_steps}] eval: {shown}")
                if jax.process_index() == 0:
                    path = draw_attention(config, model, state, workdir, step)
                    if path:
                        _say(f"[{step}/{total_steps}] attention maps: {path}")
            checkpointing.save(manager, step, state, force=step == total_steps)
            if preempted.raised:
                if manager.latest_step() != step:
                    checkpointing.save(manager, step, state, force=True)
                manager.wait_until_finished()
                _say(f"SIGTERM: saved the checkpoint at step {step}; rerun the command to resume.")
                writer.flush()
                sys.exit(143)
    manager.wait_until_finished()
    manager.close()
    writer.flush()
    if jax.process_index() == 0 and eval_metrics:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump({"step": step, **eval_metrics}, f, indent=2)
    return eval_metrics
