"""The path layer: every file the project reads or writes goes through `etils.epath`.

`etils.epath` is what Orbax and clu use; it reads and writes local paths and URLs
(`gs://bucket/run`, and the other schemes its backends know) alike.
"""

import os

from etils import epath


def as_path(path: str | os.PathLike) -> epath.Path:
    """A path as an epath: URLs (gs://...) as they are, local paths expanded and absolute."""
    text = os.fspath(path)
    if "://" in text:
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def write_bytes(path: str | os.PathLike, data: bytes) -> epath.Path:
    """Writes a file, making its folder first; local or remote. Returns its path."""
    path = as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_text(path: str | os.PathLike, text: str) -> epath.Path:
    """`write_bytes` for text (UTF-8)."""
    return write_bytes(path, text.encode())


def require_checkpoint_support(path: str | os.PathLike) -> None:
    """Refuses a gs:// path where Orbax cannot list its checkpoints (no google-cloud-storage).

    Orbax lists a bucket's checkpoints with google-cloud-storage, which it does not declare.
    """
    import importlib.util

    url = os.fspath(path)
    if url.startswith("gs://") and importlib.util.find_spec("google.cloud.storage") is None:
        raise ModuleNotFoundError(
            f"{url}: a gs:// path needs the google-cloud-storage package (Orbax reads bucket "
            "listings with it; Colab has it): pip install 'ltpa_jax[gcs]'."
        )
