"""End-to-end epoch benchmark: the host and the device input paths side by side in one run.

One full epoch of CIFAR-100-shaped data (random uint8 images, 50,000 train / 10,000 test by
default, or fewer with `--num-train`/`--num-test`), training and then evaluating, for:

* `synthetic`: one device-resident batch reused at every step (no input at all: the ceiling);
* `host`: `data.Pipeline.train_batches` / `eval_batches` (tf.data on the host, the arrays
  served through `tfds.testing.mock_data`) and `data.shard_batch` at every step, as the
  training loop feeds batches from the host;
* `host-numpy` (only where TensorFlow is missing, e.g. an accelerator machine without it): the
  same batches made on the host by `data.augment` on the CPU backend, one batch ahead in a
  thread, and copied per step; a stand-in for the tf.data path, not the project's host path;
* `device`: `data.device.DeviceTrainData` / `DeviceEvalData` (the split copied once, batches
  made on the devices), batch and step fused in one program (`DeviceTrainData.jit_steps`),
  one step per dispatch;
* `device kN`: the same, `N` steps per dispatch (one `lax.scan`), with `--steps-per-dispatch N`.

Per row: seconds of the training epoch and of the evaluation pass, images/s of training, the
median step, the input time per step (the host's time to obtain the next batch: `next()` and
the copy for the host paths; nothing but the step number for the device path), its share of
the step time ("input wait"), and FLOPs, TFLOP/s and MFU of the training steps (FLOPs from
XLA's cost analysis of the compiled single step, x device count, counted on the CPU for
accelerators: `train_step.counted_step_flops`; peaks from `train_step.PEAK_FLOPS`). Each
dispatch is waited for (`block_until_ready` of its metrics), so the input time is time in which
the devices had nothing queued. The first dispatches (compile, the host pipeline's first batch)
are untimed warm-up. The last column projects the reference
CIFAR-100 recipe (300 "epochs" of 3 passes over 50,000 images = 45 M images, evaluating every
`config.eval_every_steps`) from the row's step and evaluation times.

    python benchmarks/epoch.py  # Full size: VGG-att3-concat-pc, 32x32, batch 128.
    python benchmarks/epoch.py --width 0.125 --num-train 2048 --num-test 512 --batch-size 64

Compute dtype: bfloat16 on GPUs and TPUs, float32 on the CPU (`--half-precision` to choose).
"""

import argparse
import concurrent.futures
import contextlib
import functools
import importlib.util
import itertools
import json
import math
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from ltpa_jax import train  # noqa: E402
from ltpa_jax.data import augment, device, get_dataset_info  # noqa: E402
from ltpa_jax.models import create_model  # noqa: E402


def _load_sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_step_bench = _load_sibling("train_step")

REFERENCE_IMAGES = 300 * 3 * 50_000  # The reference recipe: 300 "epochs" of 3 passes.


def random_split(n: int, size: int, num_classes: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "label": rng.integers(0, num_classes, n).astype(np.int32),
    }


def have_tensorflow() -> bool:
    try:
        import tensorflow as tf

        return isinstance(getattr(tf, "__version__", None), str)
    except ImportError:
        return False


@contextlib.contextmanager
def served_by_tfds(config, splits: dict[str, dict[str, np.ndarray]]):
    """`data.Pipeline` of `config` reading `splits` through `tfds.testing.mock_data`."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from ltpa_jax import data

    def as_dataset(self, split, **kwargs):
        del self, kwargs
        match = re.fullmatch(r"(\w+)(?:\[(\d+):(\d+)\])?", split)
        arrays = splits[match[1]]
        start, end = (int(match[2]), int(match[3])) if match[2] else (0, len(arrays["label"]))
        return tf.data.Dataset.from_tensor_slices(
            {"image": arrays["image"][start:end], "label": arrays["label"][start:end]}
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield data.Pipeline.from_config(config)


def numpy_host_batches(arrays, spec: device.TrainSpec, sharding, start_step: int = 0):
    """Batches made on the host by `data.augment` on the CPU backend, one ahead in a thread."""
    cpu = jax.local_devices(backend="cpu")[0]
    n = len(arrays["label"])
    steps = n // spec.batch_size

    @functools.lru_cache(maxsize=2)
    def order(epoch):
        with jax.default_device(cpu):
            return np.asarray(augment.epoch_permutation(spec.seed, epoch, n))

    def make(step):
        epoch, i = divmod(step, steps)
        idx = order(epoch)[i * spec.batch_size : (i + 1) * spec.batch_size]
        with jax.default_device(cpu):
            images = augment.augment_batch(
                arrays["image"][idx],
                idx,
                seed=spec.seed,
                epoch=epoch,
                padding=spec.padding,
                mode=spec.mode,
                flip=spec.flip,
            )
            images = np.asarray(augment.normalize(images, spec.mean, spec.std))
        return {"image": images, "label": arrays["label"][idx]}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(make, start_step)
        step = start_step
        while True:
            batch = ahead.result()
            step += 1
            ahead = pool.submit(make, step)
            yield jax.device_put(batch, sharding)


def with_first(first, stream):
    yield first
    yield from stream


def run_epoch(dispatch, state, inputs, num_dispatches, warmup):
    """Times `num_dispatches` dispatches after `warmup`.

    Returns:
        (state, [(seconds to get the input, seconds of the whole dispatch)] per dispatch).
    """
    records = []
    for i in range(warmup + num_dispatches):
        start = time.perf_counter()
        batch = next(inputs)
        got = time.perf_counter()
        state, metrics = dispatch(state, batch)
        jax.block_until_ready(metrics)
        end = time.perf_counter()
        if i >= warmup:
            records.append((got - start, end - start))
    return state, records


def evaluate(eval_fn, state, batches) -> tuple[float, float]:
    """(seconds, accuracy) of one pass; the metrics are read once at the end."""
    start = time.perf_counter()
    total = None
    for batch in batches:
        m = eval_fn(state, batch)
        total = m if total is None else total.merge(m)
    accuracy = float(total.compute()["accuracy"])
    return time.perf_counter() - start, accuracy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/cifar100_vgg_att3_concat_pc.py")
    parser.add_argument("--width", type=float, help="model.width (default: the config's)")
    parser.add_argument("--num-train", type=int, default=50_000)
    parser.add_argument("--num-test", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, help="global batch (default: the config's)")
    parser.add_argument("--eval-batch-size", type=int, help="default: the config's")
    parser.add_argument(
        "--half-precision",
        choices=("auto", "on", "off"),
        default="auto",
        help="bfloat16 compute: auto = on for GPU/TPU, off on the CPU",
    )
    parser.add_argument("--conv-impl", help="model.conv_impl (default: the config's)")
    parser.add_argument(
        "--steps-per-dispatch", type=int, default=0, help="N of the 'device kN' row"
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["synthetic", "host", "device"],
        choices=("synthetic", "host", "host-numpy", "device"),
        help="rows to run ('host' becomes 'host-numpy' where TensorFlow is missing)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed dispatches per row")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    config = train_step_bench.load_config(args.config)
    config.batch_size = args.batch_size or config.batch_size
    config.eval_batch_size = args.eval_batch_size or config.eval_batch_size
    if args.width:
        config.model.width = args.width
    if args.conv_impl:
        config.model.conv_impl = args.conv_impl
    backend = jax.default_backend()
    half = args.half_precision == "on" or (args.half_precision == "auto" and backend != "cpu")
    config.half_precision = half
    config.half_precision_on_accelerators = config.half_precision  # The row's dtype only.
    info = get_dataset_info(config.dataset)
    size, b = config.image_size, config.batch_size
    n_dev = jax.device_count()
    if b % n_dev or config.eval_batch_size % n_dev:
        parser.error(f"batch sizes must be multiples of the device count ({n_dev}).")
    splits = {
        "train": random_split(args.num_train, size, info.num_classes, seed=1),
        "test": random_split(args.num_test, size, info.num_classes, seed=2),
    }
    steps = args.num_train // b
    k = args.steps_per_dispatch
    paths = list(args.paths)
    tensorflow = have_tensorflow()
    if "host" in paths and not tensorflow:
        paths[paths.index("host")] = "host-numpy"
    dtype = "bfloat16" if half else "float32"

    print("\n".join(train_step_bench.machine_lines()))
    print(
        f"config: {args.config} (model.width {config.model.width}, conv_impl "
        f"{config.model.conv_impl}, {dtype}); random uint8 {size}x{size} data, "
        f"{args.num_train} train / {args.num_test} test, {info.num_classes} classes; batch {b}, "
        f"eval batch {config.eval_batch_size}; {steps} steps per epoch; TensorFlow "
        f"{'present' if tensorflow else 'missing'}"
    )

    mesh = train.create_mesh()
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))
    schedule = train.learning_rate_schedule(config, steps)
    model = create_model(config)
    init = jax.jit(
        functools.partial(train.create_train_state, config, model, schedule=schedule),
        out_shardings=replicated,
    )
    step_fn = functools.partial(train.train_step, schedule=schedule)
    p_train_step = jax.jit(
        step_fn,
        in_shardings=(replicated, data_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    p_eval_step = jax.jit(
        train.eval_step, in_shardings=(replicated, data_sharding), out_shardings=replicated
    )
    spec = device.TrainSpec.from_config(config, info, data_sharding)

    start = time.perf_counter()
    train_data = device.DeviceTrainData(
        splits["train"]["image"], splits["train"]["label"], mesh=mesh, spec=spec
    )
    eval_data = device.DeviceEvalData(
        splits["test"]["image"],
        splits["test"]["label"],
        mesh=mesh,
        batch_size=config.eval_batch_size,
        mean=info.mean,
        std=info.std,
    )
    jax.block_until_ready((train_data.data, eval_data.data))
    copy_s = time.perf_counter() - start

    state = init(jax.random.key(config.seed))
    example = train_data.batch(0)
    compiled = p_train_step.lower(state, example).compile()  # Every single-step row runs this.
    if backend == "cpu":
        step_flops = (train_step_bench._flops(compiled) or 0) * n_dev or None
    else:  # cuDNN's convolutions are not in a GPU compile's count: count on the CPU.
        step_flops = train_step_bench.counted_step_flops(config, steps)
    jax.block_until_ready(p_eval_step(state, eval_data.batch(0)))  # Compiled before any row.
    jax.block_until_ready(train_data.batch(1))
    start = time.perf_counter()
    for i in range(20):
        jax.block_until_ready(train_data.batch(i))
    device_batch_ms = 1e3 * (time.perf_counter() - start) / 20

    rows = []

    def record(name, k_steps, records, eval_s, accuracy, setup_s):
        inputs = sum(r[0] for r in records)
        total = sum(r[1] for r in records)
        timed_steps = len(records) * k_steps
        step_s = statistics.median(r[1] for r in records) / k_steps
        row = {
            "path": name,
            "steps_per_dispatch": k_steps,
            "dtype": dtype,
            "batch": b,
            "timed_steps": timed_steps,
            "train_s": total,
            "eval_s": eval_s,
            "eval_accuracy": accuracy,
            "setup_s": setup_s,
            "images_per_s": timed_steps * b / total,
            "step_ms": 1e3 * step_s,
            "input_ms_per_step": 1e3 * inputs / timed_steps,
            "input_wait": inputs / total,
            "flops_per_step": step_flops,
        }
        rows.append(row)
        print(f"  {name}: {row['images_per_s']:.0f} img/s, wait {100 * row['input_wait']:.1f}%")

    for path in paths:
        state = init(jax.random.key(config.seed))
        print(f"[{path}] ...", flush=True)
        if path == "synthetic":
            batch = train_data.batch(0)
            state, records = run_epoch(compiled, state, itertools.repeat(batch), steps, args.warmup)
            record("synthetic", 1, records, float("nan"), float("nan"), 0.0)
        elif path == "host":
            from ltpa_jax import data

            start = time.perf_counter()
            with served_by_tfds(config, splits) as pipeline:
                stream = pipeline.train_batches(0)
                first = next(stream)
                setup_s = time.perf_counter() - start
                host_stream = (
                    data.shard_batch(x, data_sharding) for x in with_first(first, stream)
                )
                state, records = run_epoch(compiled, state, host_stream, steps, args.warmup)
                eval_s, acc = evaluate(
                    p_eval_step,
                    state,
                    (
                        data.shard_batch(
                            {key: x[key] for key in ("image", "label", "mask")}, data_sharding
                        )
                        for x in pipeline.eval_batches("test")
                    ),
                )
            record("host", 1, records, eval_s, acc, setup_s)
        elif path == "host-numpy":
            stream = numpy_host_batches(splits["train"], spec, data_sharding)
            start = time.perf_counter()
            first = next(stream)
            setup_s = time.perf_counter() - start
            chained = with_first(first, stream)
            state, records = run_epoch(compiled, state, chained, steps, args.warmup)
            eval_s, acc = evaluate(p_eval_step, state, eval_data.batches())
            record("host-numpy (train only; eval on device)", 1, records, eval_s, acc, setup_s)
        elif path == "device":
            for k_steps in sorted({1, k} - {0}):
                state = init(jax.random.key(config.seed))
                run = train_data.jit_steps(step_fn, k_steps)  # Batch and steps fused.
                dispatches = max(1, steps // k_steps)
                firsts = itertools.count(0, k_steps)
                state, records = run_epoch(run, state, firsts, dispatches, args.warmup)
                eval_s, acc = evaluate(p_eval_step, state, eval_data.batches())
                name = "device" if k_steps == 1 else f"device k{k_steps}"
                record(name, k_steps, records, eval_s, acc, copy_s)
        del state

    kind = jax.devices()[0].device_kind
    peak = train_step_bench.peak_flops(kind, half)
    eval_steps = math.ceil(REFERENCE_IMAGES / b)
    lines = [
        "| path | dtype | batch | train s (epoch) | eval s | img/s | step ms (median) | "
        "input ms/step | input wait | vs synthetic | GFLOP/step | TFLOP/s | MFU | "
        "reference recipe (projected) |",
        "|" + "---|" * 14,
    ]
    synthetic = next((r for r in rows if r["path"] == "synthetic"), None)
    for r in rows:
        achieved = step_flops * r["images_per_s"] / b if step_flops else None
        r["tflops"] = achieved / 1e12 if achieved else None
        r["mfu"] = achieved / (peak * n_dev) if achieved and peak else None
        evals = math.ceil(eval_steps / config.eval_every_steps)
        eval_s = r["eval_s"] if np.isfinite(r["eval_s"]) else 0.0
        scale = args.num_test and 10_000 / args.num_test
        r["projected_recipe_s"] = REFERENCE_IMAGES / r["images_per_s"] + evals * eval_s * scale
        vs = r["images_per_s"] / synthetic["images_per_s"] if synthetic else None
        hours = r["projected_recipe_s"] / 3600
        cells = [
            r["path"],
            r["dtype"],
            str(b),
            f"{r['train_s']:.2f}",
            f"{r['eval_s']:.2f}" if np.isfinite(r["eval_s"]) else "-",
            f"{r['images_per_s']:.0f}",
            f"{r['step_ms']:.2f}",
            f"{r['input_ms_per_step']:.3f}",
            f"{100 * r['input_wait']:.1f}%",
            f"{vs:.2f}" if vs else "-",
            f"{step_flops / 1e9:.1f}" if step_flops else "n/a",
            f"{r['tflops']:.3g}" if r["tflops"] else "n/a",
            f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a",
            f"{hours * 60:.0f} min" if hours < 2 else f"{hours:.1f} h",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    print()
    print("\n".join(lines))
    print(
        f"\ncopy of both splits to the devices: {copy_s:.2f} s; one device batch alone: "
        f"{device_batch_ms:.3f} ms; host rows' first batch (pipeline set-up): "
        + ", ".join(f"{r['path']} {r['setup_s']:.2f} s" for r in rows if "host" in r["path"])
    )
    print(
        f"projection: {REFERENCE_IMAGES / 1e6:.0f} M training images at the row's img/s, plus "
        f"{math.ceil(eval_steps / config.eval_every_steps)} evaluations (every "
        f"{config.eval_every_steps} steps) of 10,000 test images at the row's eval time "
        "scaled to 10,000; peak "
        + (f"{peak / 1e12:.0f} TFLOP/s per device ({kind}, {dtype})" if peak else "unknown")
    )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"machine": train_step_bench.machine_lines(), "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
