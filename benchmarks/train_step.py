"""Train-step benchmark: compile time, step time, images/s, memory, FLOPs and MFU.

Builds the train state and the jitted train step exactly as `train.train_and_evaluate` does
(`train.create_mesh`, `train.create_train_state` under `jax.jit` with replicated output,
`train.jit_steps`), lowers and compiles it once, then times steps:

* `synthetic`: one device-resident batch reused at every step (input pipeline excluded);
* `device`: batches made on the devices by `data.device.DeviceTrainData` (the device-resident
  input path of CIFAR/SVHN) from a random uint8 split of 16 batches, one jitted batch per step;
* `pipeline`: batches from `data.Pipeline.train_batches` + `shard_batch` (included), so a
  data bottleneck shows as a slower step than `synthetic`.

Each row is the median of `--steps` steps after `--warmup` steps, each timed to
`block_until_ready`. FLOPs per step come from XLA's `compiled.cost_analysis()`; MFU divides
the achieved FLOP/s by the devices' peak for the compute dtype (table below; unknown devices,
the CPU included, get FLOP/s only).

    python benchmarks/train_step.py --config configs/demo.py --conv-impl xla matmul winograd
    python benchmarks/train_step.py --config configs/default.py --batch-size 256 --half-precision

bfloat16 on the CPU (`--half-precision`) is timed but is not a supported training mode:
`validation.check_config` refuses it there (XLA gave NaN logits in eval mode); this script
bypasses that check to time it.
"""

import argparse
import datetime
import functools
import itertools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import flax  # noqa: E402
import jax  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from ltpa_jax import configs, data, train  # noqa: E402
from ltpa_jax.data import device  # noqa: E402
from ltpa_jax.models import create_model  # noqa: E402

# Dense peak FLOP/s per JAX device, by a substring of `device.device_kind`: (bfloat16, float32).
# float32 on NVIDIA is the TF32 tensor-core peak (JAX's default matmul/conv precision uses
# TF32 there); on TPUs float32 matmuls run as one bfloat16 pass at default precision.
PEAK_FLOPS = {
    "A100": (312e12, 156e12),
    "H100 PCIe": (756e12, 378e12),
    "H100": (989e12, 494e12),  # SXM.
    "H200": (989e12, 494e12),
    "TPU v4": (275e12, 275e12),  # One chip (both TensorCores) per device.
    "TPU v5 lite": (197e12, 197e12),  # v5e.
    "TPU v5e": (197e12, 197e12),
    "TPU v6 lite": (918e12, 918e12),  # v6e (Trillium).
    "TPU v6e": (918e12, 918e12),
}


def peak_flops(device_kind: str, half: bool) -> float | None:
    """Peak FLOP/s of one device of this kind, or None when unknown (e.g. CPUs)."""
    for name, (bf16, fp32) in PEAK_FLOPS.items():
        if name.lower() in device_kind.lower():
            return bf16 if half else fp32
    return None


def load_config(path: str):
    """`get_config()` of a config file, loaded as `ltpa-train --config=path` loads it."""
    return configs.load_module(path).get_config()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    device = jax.devices()[0]
    return [
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"machine: {cpu_model()}, {os.cpu_count()} cores visible, {platform.system()}",
        f"python {platform.python_version()}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"flax {flax.__version__}",
        f"devices: {jax.device_count()} x {device.device_kind} ({jax.default_backend()})",
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r} (glibc.malloc.hugetlb=1: "
        "malloc on transparent huge pages, as the ltpa-* commands set it; README)",
    ]


def _flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # Older jax: one dict per program.
        analysis = analysis[0] if analysis else {}
    value = (analysis or {}).get("flops")
    return float(value) if value is not None and value > 0 else None


def counted_step_flops(config, steps_per_epoch: int) -> float | None:
    """FLOPs of one train step of `config` counted by XLA:CPU, with XLA's own convolution.

    On GPUs XLA hands the convolutions to cuDNN as custom calls, which its cost analysis does
    not count: an H100 compile of the full VGG-att3 step at batch 128 reported 10 GFLOP, where
    the convolutions alone are ~2,800. Accelerator rows therefore take the count of the same
    step (same batch, dtype and model) compiled for one CPU device; nothing runs there.
    """
    config = config.copy_and_resolve_references()
    config.model.conv_impl = "xla"
    mesh = train.create_mesh(jax.local_devices(backend="cpu")[:1])
    schedule = train.learning_rate_schedule(config, steps_per_epoch)
    model = create_model(config)
    create = functools.partial(train.create_train_state, config, model, schedule=schedule)
    state = jax.eval_shape(create, jax.random.key(0))
    b, s = config.batch_size, config.image_size
    batch = {
        "image": jax.ShapeDtypeStruct((b, s, s, 3), np.float32),
        "label": jax.ShapeDtypeStruct((b,), np.int32),
    }
    step = jax.jit(
        functools.partial(train.train_step, schedule=schedule),
        in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))),
    )
    return _flops(step.lower(state, batch).compile())


def _memory(compiled) -> dict[str, int] | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it.
        return None
    if m is None:
        return None
    return {
        "argument": int(m.argument_size_in_bytes),
        "output": int(m.output_size_in_bytes),
        "temp": int(m.temp_size_in_bytes),
        "alias": int(getattr(m, "alias_size_in_bytes", 0)),
    }


def _time_steps(step_fn, state, batches, warmup: int, steps: int):
    """Runs warm-up then timed steps.

    Returns:
        (state, per-step seconds, per-step seconds spent obtaining the batch).
    """
    times, inputs = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        batch = next(batches)
        got = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - start)
            inputs.append(got - start)
    return state, times, inputs


def benchmark(config, args, conv_impl: str) -> list[dict]:
    """Both phases for one convolution implementation; returns one row per phase."""
    config = config.copy_and_resolve_references()
    config.model.conv_impl = conv_impl
    config.half_precision = args.half_precision
    config.half_precision_on_accelerators = config.half_precision  # The row's dtype only.
    mesh = train.create_mesh()
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))
    data_pipeline, not_found, steps_per_epoch = None, "--synthetic-only", 1000
    if not args.synthetic_only:
        try:
            data_pipeline = data.Pipeline.from_config(config)
            steps_per_epoch = data_pipeline.steps_per_epoch
        except data.DatasetNotFoundError as error:
            not_found = error  # steps_per_epoch only shapes the schedule.
    schedule = train.learning_rate_schedule(config, steps_per_epoch)
    model = create_model(config)
    init = jax.jit(
        functools.partial(train.create_train_state, config, model, schedule=schedule),
        out_shardings=replicated,
    )
    state = init(jax.random.key(config.seed))
    p_train_step, _ = train.jit_steps(mesh, schedule)

    b, s = config.batch_size, config.image_size
    rng = np.random.default_rng(0)
    synthetic = data.shard_batch(
        {
            "image": rng.normal(size=(b, s, s, 3)).astype(np.float32),
            "label": rng.integers(0, config.model.num_classes, size=b).astype(np.int32),
        },
        data_sharding,
    )
    start = time.perf_counter()
    lowered = p_train_step.lower(state, synthetic)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    flops = _flops(compiled)
    if jax.default_backend() != "cpu":  # cuDNN's convolutions are not in the count.
        flops = counted_step_flops(config, steps_per_epoch)
    memory = _memory(compiled)
    dtype = "bfloat16" if args.half_precision else "float32"
    common = {
        "conv_impl": conv_impl,
        "dtype": dtype,
        "batch": b,
        "compile_s": lower_s + compile_s,
        "flops": flops,
        "memory": memory,
    }

    def repeat(batch):
        while True:
            yield batch

    state, times, inputs = _time_steps(compiled, state, repeat(synthetic), args.warmup, args.steps)
    rows = [{**common, "phase": "synthetic", "times": times, "inputs": inputs}]

    info = data.get_dataset_info(config.dataset)
    if device.supports(info, s):
        rng = np.random.default_rng(1)
        on_device = device.DeviceTrainData(
            rng.integers(0, 256, (16 * b, s, s, 3), dtype=np.uint8),
            rng.integers(0, config.model.num_classes, 16 * b).astype(np.int32),
            mesh=mesh,
            spec=device.TrainSpec.from_config(config, info),
        )
        device_batches = (on_device.batch(i) for i in itertools.count())
        state, times, inputs = _time_steps(compiled, state, device_batches, args.warmup, args.steps)
        rows.append({**common, "phase": "device", "times": times, "inputs": inputs})

    if data_pipeline is None:
        print(f"[{conv_impl}/{dtype}] pipeline phase skipped: {str(not_found).splitlines()[0]}")
        return rows
    host_batches = data_pipeline.train_batches()
    start = time.perf_counter()
    first = next(host_batches)
    first_batch_s = time.perf_counter() - start

    def pipeline():
        yield data.shard_batch({"image": first["image"], "label": first["label"]}, data_sharding)
        for batch in host_batches:
            yield data.shard_batch(
                {"image": batch["image"], "label": batch["label"]}, data_sharding
            )

    state, times, inputs = _time_steps(compiled, state, pipeline(), args.warmup, args.steps)
    rows.append(
        {
            **common,
            "phase": "pipeline",
            "times": times,
            "inputs": inputs,
            "first_batch_s": first_batch_s,
        }
    )
    del state
    return rows


def format_rows(rows: list[dict]) -> list[str]:
    """A Markdown table, one line per (convolution, dtype, input) row."""
    n = jax.device_count()
    kind = jax.devices()[0].device_kind
    columns = [
        "conv", "dtype", "input", "batch", "compile s", "step ms (median)", "step ms (min-max)",
        "input wait", "img/s", "img/s/device", "GFLOP/step", "TFLOP/s", "MFU", "arg MB", "out MB",
        "temp MB", "temp MB/img",
    ]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        median = statistics.median(r["times"])
        images = r["batch"] / median
        # cost_analysis counts the per-device (SPMD-partitioned) program: x devices per step.
        step_flops = r["flops"] * n if r["flops"] else None
        achieved = step_flops / median if step_flops else None
        peak = peak_flops(kind, r["dtype"] == "bfloat16")
        dtype = r["dtype"]
        if dtype == "bfloat16" and jax.default_backend() == "cpu":
            dtype += " (CPU: timing only, not supported)"
        memory = r["memory"]
        cells = [
            r["conv_impl"],
            dtype,
            {"pipeline": "train_batches"}.get(r["phase"], r["phase"]),
            str(r["batch"]),
            f"{r['compile_s']:.1f}",
            f"{1e3 * median:.1f}",
            f"{1e3 * min(r['times']):.1f}-{1e3 * max(r['times']):.1f}",
            f"{100 * sum(r['inputs']) / sum(r['times']):.1f}%",
            f"{images:.0f}",
            f"{images / n:.0f}",
            f"{step_flops / 1e9:.2f}" if step_flops else "n/a",
            f"{achieved / 1e12:.3f}" if achieved else "n/a",
            f"{100 * achieved / (peak * n):.1f}%" if achieved and peak else "n/a",
        ]
        if memory:
            cells += [f"{memory[k] / 2**20:.1f}" for k in ("argument", "output", "temp")] + [
                f"{memory['temp'] / r['batch'] / 2**20:.2f}"
            ]
        else:
            cells += ["n/a"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.py", help="config file")
    parser.add_argument("--batch-size", type=int, help="global batch (default: the config's)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--half-precision", action="store_true", help="bfloat16 compute")
    parser.add_argument(
        "--conv-impl",
        nargs="+",
        choices=("xla", "matmul", "winograd"),
        default=["xla", "matmul", "winograd"],
        help="implementations to time, one row group each, side by side (default: all)",
    )
    parser.add_argument("--image-size", type=int, help="input side (default: the config's)")
    parser.add_argument("--width", type=float, help="model.width (default: the config's)")
    parser.add_argument(
        "--synthetic-only",
        action="store_true",
        help="skip the train_batches phase (no data.Pipeline: no TFDS data needed)",
    )
    args = parser.parse_args(argv)

    config = load_config(args.config)
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.image_size:
        config.image_size = args.image_size
    if args.width:
        config.model.width = args.width
    if config.batch_size % jax.device_count():
        parser.error(f"--batch-size {config.batch_size} must be a multiple of the device count.")

    print("\n".join(machine_lines()))
    print(
        f"config: {args.config} (dataset {config.dataset}, {config.image_size}x"
        f"{config.image_size}, model.width {config.model.width}, batch {config.batch_size}); "
        f"median of {args.steps} steps after {args.warmup} warm-up steps"
    )
    rows = []
    for impl in args.conv_impl:
        rows.extend(benchmark(config, args, impl))
    print()
    print("\n".join(format_rows(rows)))
    for r in rows:
        if "first_batch_s" in r:
            print(
                f"[{r['conv_impl']}] first train_batches batch (cache fill / generation): "
                f"{r['first_batch_s']:.2f} s"
            )
    peak = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if peak and "peak_bytes_in_use" in peak:
        print(f"device 0 peak memory in use: {peak['peak_bytes_in_use'] / 2**20:.1f} MB")
    else:
        print("device peak memory: not reported by this backend (see compiled arg/out/temp MB)")
    print(
        "FLOPs: XLA cost analysis of the compiled per-device program x device count. "
        "MFU: FLOP/s / (device peak x devices); n/a for devices without a known peak."
    )


if __name__ == "__main__":
    main()
