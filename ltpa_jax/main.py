"""Command line: `ltpa-train --config=configs/demo.py --workdir=/tmp/ltpa/demo`.

Any config field can be overridden, e.g. `--config.batch_size=256`. Rerunning the same command
resumes from the latest checkpoint in the workdir.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ltpa_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and pictures.")
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)
flags.mark_flags_as_required(["config", "workdir"])


_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process run set up by hand."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes of a run set up by hand.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (0-based).")


def maybe_initialize_distributed() -> None:
    """Joins a multi-process runtime when there is one; must run before any other JAX call.

    Explicit: --coordinator_address, --num_processes and --process_id (on CPUs, collectives go
    through gloo). Detected: a TPU pod slice (several TPU_WORKER_HOSTNAMES) or SLURM with
    several tasks, where `jax.distributed.initialize()` finds the rest itself.
    """
    import jax

    if _NUM_PROCESSES.value and _NUM_PROCESSES.value > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            _COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value
        )
    else:
        tpu_workers = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
        if len(tpu_workers) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            jax.distributed.initialize()
        else:
            return
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    cli.quiet_unless_verbose()
    maybe_initialize_distributed()
    from ltpa_jax import input_pipeline, train, validation  # After distributed init.

    config = flags.FLAGS.config
    try:  # Fail before anything is written to the workdir.
        validation.check_config(config)
        input_pipeline.check_dataset(config)
    except (ValueError, FileNotFoundError) as error:
        cli.fail(error)
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
    cli.rerun_with_huge_pages()
    _make_configs_importable(sys.argv)
    app.run(main)


if __name__ == "__main__":
    run()
