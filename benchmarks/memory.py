"""Train-step memory from XLA, per image, with and without remat, and the largest batch that fits.

Compiles (never runs) the train step exactly as `train.train_and_evaluate` builds it, on one
device, from abstract shapes, at two batch sizes, and reads `compiled.memory_analysis()`:
arguments (train state + batch), outputs, aliased bytes (the donated state) and temporaries.
The step's total, `argument + output - alias + temp`, is linear in the batch, so the two
compiles give its fixed part (parameters, optimizer state, batch-independent buffers) and its
cost per image, and from them the largest batch that fits a memory budget (16 GiB: a Colab T4
or one TPU v3 core), parameters and optimizer state included.

    python benchmarks/memory.py --config configs/cub_vgg_att3_concat_pc.py
    python benchmarks/memory.py --config configs/cifar100_vgg_att3_concat_pc.py --batches 64 128

The numbers are those of the backend the script runs on: XLA:CPU here. A GPU or TPU compile
fuses and schedules differently (and cuDNN may want workspace), so treat CPU numbers as an
estimate for accelerators and rerun the script on the accelerator for the real ones.
"""

import argparse
import datetime
import functools
import platform
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from train_step import load_config  # The script's own folder is on sys.path.

from ltpa_jax import train
from ltpa_jax.models import create_model
from ltpa_jax.models.remat import REMAT_MODES

GIB = 2**30


def step_memory(config, batch: int) -> tuple[dict[str, int], float]:
    """XLA's memory analysis of the compiled train step at `batch`, and the compile seconds."""
    mesh = train.create_mesh(jax.devices()[:1])
    schedule = train.learning_rate_schedule(config, steps_per_epoch=100)
    model = create_model(config)
    state = jax.eval_shape(
        functools.partial(train.create_train_state, config, model, schedule=schedule),
        jax.random.key(0),
    )
    replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state
    )
    size = config.image_size
    batch_shapes = {
        "image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32, sharding=data),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data),
    }
    train_step_fn, _ = train.jit_steps(mesh, schedule)
    start = time.perf_counter()
    m = train_step_fn.lower(state, batch_shapes).compile().memory_analysis()
    seconds = time.perf_counter() - start
    memory = {
        "argument": int(m.argument_size_in_bytes),
        "output": int(m.output_size_in_bytes),
        "alias": int(m.alias_size_in_bytes),
        "temp": int(m.temp_size_in_bytes),
    }
    memory["total"] = memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
    return memory, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/cub_vgg_att3_concat_pc.py")
    parser.add_argument("--batches", type=int, nargs=2, default=(8, 16), help="two batch sizes")
    parser.add_argument("--budget-gib", type=float, default=16.0, help="device memory, GiB")
    parser.add_argument("--remat", nargs="+", default=list(REMAT_MODES), choices=REMAT_MODES)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--conv-impl", default="xla", choices=("xla", "matmul", "winograd"))
    args = parser.parse_args(argv)
    b1, b2 = sorted(args.batches)
    base = load_config(args.config)
    print(f"# {args.config}, conv_impl={args.conv_impl}, batches {b1} and {b2}")
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()} "
        f"{jax.devices()[0].device_kind} ({jax.default_backend()}); jax {jax.__version__}"
    )
    print(
        "\n| image | dtype | remat | compile s | state+fixed GiB | MiB per image "
        f"| GiB at batch {b2} | largest batch in {args.budget_gib:g} GiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        for remat in args.remat:
            config = base.copy_and_resolve_references()
            config.model.conv_impl = args.conv_impl
            config.half_precision = dtype == "bfloat16"
            config.half_precision_on_accelerators = config.half_precision  # The row's dtype only.
            config.remat = remat
            small, t1 = step_memory(config, b1)
            large, t2 = step_memory(config, b2)
            per_image = (large["total"] - small["total"]) / (b2 - b1)
            fixed = small["total"] - b1 * per_image
            fits = int((args.budget_gib * GIB - fixed) // per_image) if per_image > 0 else 0
            print(
                f"| {config.image_size} | {dtype} | {remat} | {(t1 + t2) / 2:.0f} "
                f"| {fixed / GIB:.2f} | {per_image / 2**20:.1f} | {large['total'] / GIB:.2f} "
                f"| {fits} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
