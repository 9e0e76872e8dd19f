"""Command line: `ltpa-train --config=configs/demo.py --workdir=/tmp/ltpa/demo`.

Any config field can be overridden, e.g. `--config.batch_size=256`. Rerunning the same command
resumes from the latest checkpoint in the workdir.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and pictures.")
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


def maybe_initialize_distributed() -> None:
    """Joins a multi-host runtime when one is detected (TPU pod slice, SLURM, or explicit).

    Must run before any other JAX call. Detection: JAX_COORDINATOR_ADDRESS (explicit), more
    than one TPU worker in TPU_WORKER_HOSTNAMES, or SLURM with several tasks.
    """
    import jax

    tpu_workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    multi = (
        "JAX_COORDINATOR_ADDRESS" in os.environ
        or len([h for h in tpu_workers.split(",") if h]) > 1
        or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    )
    if multi:
        jax.distributed.initialize()
        logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:  # Orbax and clu log every save at INFO: too chatty.
        logging.set_verbosity(logging.WARNING)
    maybe_initialize_distributed()
    from ltpa_jax import input_pipeline, train, validation  # After distributed init.

    config = flags.FLAGS.config
    try:  # Fail before anything is written to the workdir.
        validation.check_config(config)
        input_pipeline.check_dataset(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    train.train_and_evaluate(config, _WORKDIR.value)


def _make_configs_importable(argv: list[str]) -> None:
    """Lets config files `from configs import default` wherever the command runs from.

    Config files live in a `configs/` folder and import their base config as a package; its
    parent directory is put on sys.path before the flags load the file.
    """
    for i, arg in enumerate(argv):
        path = None
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        if path:
            root = os.path.dirname(os.path.dirname(os.path.abspath(path.split(":", 1)[0])))
            if root not in sys.path:
                sys.path.insert(0, root)


def run() -> None:
    """Console-script entry point (`ltpa-train`)."""
    _make_configs_importable(sys.argv)
    app.run(main)


if __name__ == "__main__":
    run()
