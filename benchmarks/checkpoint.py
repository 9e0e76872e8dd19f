"""How long a checkpoint save stops training: blocking vs asynchronous Orbax saves, side by side.

Builds the train state of a config (parameters, batch statistics, SGD momentum) on one device
and saves it `--saves` times with `checkpointing.create_manager(..., async_saves=...)`, both
ways in one run. "blocking" is the time `checkpointing.save` takes to return (the time the
training loop waits); "total" adds `wait_until_finished` (the file writing, which the async
manager does in the background while training goes on).

    python benchmarks/checkpoint.py --config configs/cifar100_vgg_att3_concat_pc.py
    python benchmarks/checkpoint.py --config configs/demo.py --saves 5 --dir gs://bucket/tmp

A local disk is the fastest case; on a Drive or bucket workdir the blocking save's cost grows
with the write time, the async one's does not.
"""

import argparse
import datetime
import platform
import statistics
import tempfile
import time

import jax
from train_step import load_config  # The script's own folder is on sys.path.

from ltpa_jax import checkpointing, train
from ltpa_jax.models import create_model


def time_saves(state, directory: str, *, async_saves: bool, saves: int) -> tuple[float, float]:
    """Median seconds of (save returns, save committed) over `saves` saves into `directory`."""
    manager = checkpointing.create_manager(
        directory, keep=2, every_steps=1, async_saves=async_saves
    )
    blocking, total = [], []
    for step in range(1, saves + 1):
        state = state.replace(step=step)
        t = time.perf_counter()
        checkpointing.save(manager, step, state)
        blocking.append(time.perf_counter() - t)
        manager.wait_until_finished()
        total.append(time.perf_counter() - t)
    manager.close()
    return statistics.median(blocking), statistics.median(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/cifar100_vgg_att3_concat_pc.py")
    parser.add_argument("--saves", type=int, default=5, help="saves per mode (median reported)")
    parser.add_argument("--dir", default="", help="where to save (default: a local temp dir)")
    args = parser.parse_args()

    config = load_config(args.config)
    model = create_model(config)
    schedule = train.learning_rate_schedule(config, 100)
    state = jax.jit(lambda rng: train.create_train_state(config, model, rng, schedule))(
        jax.random.key(0)
    )
    megabytes = sum(x.nbytes for x in jax.tree.leaves(state)) / 1e6
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{jax.devices()[0].platform}: {args.config}, state {megabytes:.0f} MB, "
        f"median of {args.saves} saves"
    )
    print("| saves | training waits (s) | until committed (s) |")
    print("|---|---|---|")
    for async_saves in (False, True):
        directory = args.dir or tempfile.mkdtemp(prefix="ltpa_ckpt_bench_")
        directory = f"{directory.rstrip('/')}/{'async' if async_saves else 'blocking'}"
        blocking, total = time_saves(state, directory, async_saves=async_saves, saves=args.saves)
        name = "async" if async_saves else "blocking"
        print(f"| {name} | {blocking:.2f} | {total:.2f} |")


if __name__ == "__main__":
    main()
