"""Input-pipeline benchmark: examples/s of `data.Pipeline.train_batches` alone.

The first batch is timed separately: it includes building the pipeline and filling its cache
(for cluttered digits, generating the images). The rest is the steady state, with nothing
consuming the batches but this loop.

    python benchmarks/input_pipeline.py --config configs/demo.py --batches 50
    python benchmarks/input_pipeline.py --config configs/default.py            # needs CIFAR-100
    python benchmarks/input_pipeline.py --config configs/default.py --mock     # TFDS mock data

TFDS datasets are read only when prepared in `config.data_dir` (nothing is downloaded);
`--mock` times the same pipeline on `tfds.testing.mock_data` (random images, generated in
memory: it measures the preprocessing, not the reading of files).
"""

import argparse
import datetime
import os
import platform
import statistics
import time

import tensorflow as tf
import tensorflow_datasets as tfds
from train_step import cpu_model, load_config  # The script's own folder is on sys.path.

from ltpa_jax import data


def time_batches(config, num_batches: int) -> tuple[float, list[float]]:
    """(first-batch seconds, seconds of each following batch)."""
    start = time.perf_counter()
    batches = data.Pipeline.from_config(config).train_batches()
    next(batches)
    first = time.perf_counter() - start
    times = []
    for _ in range(num_batches):
        start = time.perf_counter()
        next(batches)
        times.append(time.perf_counter() - start)
    return first, times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.py", help="config file")
    parser.add_argument("--batches", type=int, default=50, help="batches timed after the first")
    parser.add_argument("--batch-size", type=int, help="batch (default: the config's)")
    parser.add_argument("--image-size", type=int, help="input side (default: the config's)")
    parser.add_argument("--dataset", help="config.dataset (default: the config's)")
    parser.add_argument(
        "--mock", action="store_true", help="TFDS datasets: tfds.testing.mock_data (random)"
    )
    parser.add_argument("--mock-examples", type=int, default=2048, help="examples per mock split")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.image_size:
        config.image_size = args.image_size
    if args.dataset:
        config.dataset = args.dataset
        config.model.num_classes = data.get_dataset_info(args.dataset).num_classes
    info = data.get_dataset_info(config.dataset)

    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores visible, {platform.system()}")
    print(
        f"python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"tensorflow-datasets {tfds.__version__}"
    )
    source = "generated" if info.tfds_name is None else "TFDS"
    if info.tfds_name is not None and args.mock:
        source = "TFDS mock_data"
        with tfds.testing.mock_data(
            num_examples=args.mock_examples, policy=tfds.testing.MockPolicy.USE_CODE
        ):
            first, times = time_batches(config, args.batches)
    else:
        try:
            data.Pipeline.from_config(config)
        except data.DatasetNotFoundError as error:
            print(
                f"{config.dataset}: not prepared, nothing timed (--mock times the "
                "preprocessing on mock data)."
            )
            print(str(error))
            return
        first, times = time_batches(config, args.batches)
    median = statistics.median(times)
    total = sum(times)
    print(
        f"config: {args.config}; {args.batches} batches after the first; augmentation "
        f"{info.augmentation if config.augment else 'off'}, flip {info.flip and config.augment}"
    )
    print()
    print(
        "| dataset | source | image | batch | first batch s | batch ms (median) | "
        "examples/s (median) | examples/s (mean) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {config.dataset} | {source} | {config.image_size}x{config.image_size} | "
        f"{config.batch_size} | {first:.2f} | {1e3 * median:.1f} | "
        f"{config.batch_size / median:.0f} | {config.batch_size * len(times) / total:.0f} |"
    )


if __name__ == "__main__":
    main()
