"""ltpa-prepare: downloads and prepares a config's TFDS dataset, once, before training.

    ltpa-prepare --config=configs/cifar100_vgg_att3_concat_pc.py
    ltpa-prepare --config=configs/cifar100_vgg_att3_concat_pc.py --config.data_dir=/data/tfds
    ltpa-prepare --config=configs/cub_vgg_att3_concat_pc.py --config.manual_dir=~/cub

Training never downloads: this is the one explicit step that does (TFDS's
`download_and_prepare` into `config.data_dir`; from `config.manual_dir` for datasets prepared
by hand, such as CUB). A dataset that is already prepared is left as it is. Generated datasets
(cluttered_digits) need nothing.
"""

from absl import app, flags
from ml_collections import config_flags

from ltpa_jax import cli

config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from ltpa_jax import data, validation

    config = flags.FLAGS.config
    validation.check_config(config)
    where = data.prepare_dataset(config)
    if where:
        print(f"{config.dataset}: ready in {where}")
    else:
        print(f"{config.dataset}: generated on the fly, nothing to prepare.")


def run() -> None:
    """Console-script entry point (`ltpa-prepare`)."""
    cli.run(main, doc=__doc__, key_flags=("config",), required=("config",))


if __name__ == "__main__":
    run()
