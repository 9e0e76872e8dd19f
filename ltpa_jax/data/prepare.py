"""TFDS availability (a check, no side effect) and preparation (an explicit action).

Nothing in training or analysis downloads: `Pipeline.from_config` calls `check_prepared`,
which fails at once, with the command that prepares the data, when a TFDS dataset is not in
`config.data_dir`. Preparing is `prepare_dataset(config)`, run on purpose (on a machine with
network access, or offline from `config.manual_dir` for CUB). Inside `tfds.testing.mock_data`
the check passes (mocked builders serve random data and are never "prepared").

Example:
    >>> prepare_dataset(config)  # Once, e.g. in a notebook; then train with the same data_dir.
    '/data/tfds'
"""

from typing import Any

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from ltpa_jax.data.registry import DatasetInfo, get_dataset_info


class DatasetNotFoundError(FileNotFoundError):
    """A TFDS dataset is not prepared where the config says it is."""


def tfds_is_mocked() -> bool:
    """True inside `tfds.testing.mock_data`, which patches `DatasetBuilder.as_dataset`.

    Mocked builders report `is_prepared() == False` yet serve (random) data without a download,
    so the availability check must let them through.
    """
    as_dataset = tfds.core.DatasetBuilder.as_dataset
    return getattr(as_dataset, "__module__", "").startswith("tensorflow_datasets.testing")


def tfds_builder(info: DatasetInfo, data_dir: str) -> Any:
    """The TFDS builder of a dataset in `data_dir` ('' for the TFDS default); reads nothing."""
    return tfds.builder(info.tfds_name, data_dir=data_dir or None)


def prepare_command(config: ml_collections.ConfigDict) -> str:
    """The shell command that prepares `config.dataset` into `config.data_dir` (TFDS only)."""
    info = get_dataset_info(config.dataset)
    data_dir = f", data_dir={config.data_dir!r}" if config.data_dir else ""
    prepare = "download_and_prepare()"
    if info.manual_files:
        manual_dir = config.manual_dir or "/path/to/manual_dir"
        prepare = (
            "download_and_prepare(download_config=tfds.download.DownloadConfig("
            f"manual_dir={manual_dir!r}))"
        )
    return (
        'python -c "import tensorflow_datasets as tfds; '
        f'tfds.builder({info.tfds_name!r}{data_dir}).{prepare}"'
    )


def _not_prepared_message(
    info: DatasetInfo, config: ml_collections.ConfigDict, searched: str
) -> str:
    lines = [
        f"Dataset {info.name!r} (TFDS {info.tfds_name!r}) is not prepared in {searched} "
        f"(config.data_dir={config.data_dir!r}; '' means the TFDS default). Training never "
        "downloads. Prepare it once, on a machine with network access:",
        f"  {prepare_command(config)}",
        "or point --config.data_dir at a directory that already holds it.",
    ]
    if info.manual_files:
        files = " and ".join(info.manual_files)
        lines.append(
            f"TFDS's own download of {info.tfds_name} has failed before (moved host, checksum "
            f"errors). The manual route: put {files} (from the dataset's home page) in a "
            "folder, set --config.manual_dir to it and run the command above with that folder "
            "as manual_dir. Preparing CUB decodes its masks with OpenCV "
            "(pip install opencv-python-headless)."
        )
    return "\n".join(lines)


def _missing_manual_files_message(
    info: DatasetInfo, config: ml_collections.ConfigDict, builder: Any
) -> str | None:
    """Names the files `config.manual_dir` lacks, or None (no manual route, or all there)."""
    if not (info.manual_files and config.manual_dir):
        return None
    missing = [
        name
        for name in info.manual_files
        if not tf.io.gfile.exists(f"{config.manual_dir.rstrip('/')}/{name}")
    ]
    if not missing:
        return None
    return (
        f"config.manual_dir={config.manual_dir!r} lacks {', '.join(missing)}: put "
        f"{' and '.join(info.manual_files)} there to prepare {info.tfds_name} offline.\n"
        + _not_prepared_message(info, config, str(builder.data_dir))
    )


def check_prepared(info: DatasetInfo, config: ml_collections.ConfigDict, builder: Any) -> None:
    """Fails at once, with the fix, when a TFDS dataset is not prepared; prepares nothing.

    Raises:
        DatasetNotFoundError: The message names the directory searched, the command that
            prepares the data and, for a manual route, the files `config.manual_dir` lacks.
    """
    if tfds_is_mocked() or builder.is_prepared():
        return
    message = _missing_manual_files_message(info, config, builder)
    raise DatasetNotFoundError(
        message or _not_prepared_message(info, config, str(builder.data_dir))
    )


def prepare_dataset(config: ml_collections.ConfigDict) -> str:
    """Prepares `config.dataset` into `config.data_dir`: the explicit, side-effecting action.

    Runs TFDS's `download_and_prepare`, from `config.manual_dir` when the dataset has manual
    files and the field is set (after checking that the files are there), else by download.
    Already prepared datasets and generated ones (cluttered_digits) are left as they are; an
    image folder is only checked (`data.image_folder.scan`), nothing is written.

    Returns:
        The TFDS data directory that holds the dataset (for `--config.data_dir`); for a
        generated dataset, `config.data_dir` unchanged; for an image folder, the folder.

    Raises:
        DatasetNotFoundError: `config.manual_dir` lacks some of the dataset's manual files.
        ValueError: an image folder that cannot be used (`data.image_folder.ImageFolderError`).
    """
    info = get_dataset_info(config.dataset)
    if info.source == "image_folder":
        from ltpa_jax.data import image_folder  # Local: it imports the pipeline's modules.

        return image_folder.from_config(config).root
    if info.tfds_name is None:
        return config.data_dir
    builder = tfds_builder(info, config.data_dir)
    if builder.is_prepared():
        return str(builder.data_dir_root)
    if info.manual_files and config.manual_dir:
        message = _missing_manual_files_message(info, config, builder)
        if message:
            raise DatasetNotFoundError(message)
        print(f"Preparing {info.tfds_name} from {config.manual_dir} into {builder.data_dir}...")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=config.manual_dir)
        )
    else:
        print(f"Preparing {info.tfds_name} into {builder.data_dir} (downloads)...")
        builder.download_and_prepare()
    return str(builder.data_dir_root)
