r"""ltpa-train: trains an experiment config in a workdir, resuming from its latest checkpoint.

    ltpa-train --config=configs/demo.py --workdir=/tmp/ltpa/demo
    ltpa-train --config=configs/cifar100_vgg_att3_concat_pc.py --workdir=gs://bucket/run \
        --config.data_dir=/data/tfds --config.batch_size=256

Any config field can be overridden with --config.<field>=<value>. Rerunning the same command
resumes from the latest intact checkpoint; a config that changes the model of a workdir is
refused. The dataset must be prepared first (ltpa-prepare); training never downloads.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from ltpa_jax import cli

config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process run set up by hand."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes of a run set up by hand.", lower_bound=1
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (0-based).", lower_bound=0
)


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
    maybe_initialize_distributed()
    from ltpa_jax import train  # After distributed init.

    train.train_and_evaluate(flags.FLAGS.config, cli.WORKDIR.value)


def run() -> None:
    """Console-script entry point (`ltpa-train`)."""
    cli.run(
        main,
        doc=__doc__,
        key_flags=("config", "workdir", "coordinator_address", "num_processes", "process_id"),
        required=("config", "workdir"),
    )


if __name__ == "__main__":
    run()
