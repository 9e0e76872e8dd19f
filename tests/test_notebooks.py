"""The Colab notebooks run top to bottom (FAST mode) and are committed without outputs.

The notebooks execute in a Jupyter kernel started from this interpreter (jupyter_client
replaces the kernel spec's `python` with `sys.executable`), with this process's environment,
so they also see 8 forced CPU devices (conftest.py).
"""

import os
import re
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

ROOT = Path(ROOT)
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))


def _set_parameters(nb, source: str) -> None:
    """Replaces the source of the cell tagged "parameters" (as papermill would)."""
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    cells[0].source = source


def _execute(nb):
    nbclient = pytest.importorskip("nbclient")
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    return nb


def _outputs(nb, output_type=None):
    return [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if output_type is None or out.output_type == output_type
    ]


def _text(nb) -> str:
    return "".join(out.get("text", "") for out in _outputs(nb, "stream"))


def test_both_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"train.ipynb", "attention_maps.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: strip the outputs before committing"
            assert cell.execution_count is None, f"{path.name}: strip the execution counts"


@pytest.mark.slow
def test_train_notebook_runs_in_fast_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # The kernel's temporary workdir goes here.
    nb = nbformat.read(ROOT / "colab" / "train.ipynb", as_version=4)
    _set_parameters(
        nb,
        'FAST = True\nCONFIG = "configs/smoke.py"\nWORKDIR = ""\nDATA_DIR = ""\nNUM_STEPS = None\n'
        'REPO_URL = ""',
    )
    _execute(nb)
    text = _text(nb)
    assert f"python: {sys.executable}" in text  # This venv's interpreter ran the notebook.
    assert "accelerator: CPU (" in text and "pip install" not in text  # Offline: no install.
    assert "data: cluttered_digits in (generated)" in text  # prepare_dataset: nothing to do.
    assert "device(s)" in text and "Mesh(" in text
    workdir = Path(text.split("workdir: ")[1].split("\n")[0])
    assert workdir.parent == tmp_path
    assert "final evaluation:" in text
    assert (workdir / "final_metrics.json").exists()
    assert sorted((workdir / "pictures").glob("attention_step*.png")), text
    images = [o for o in _outputs(nb, "display_data") if "image/png" in o.data]
    assert len(images) == 1  # The last attention picture, shown inline.


@pytest.mark.slow
def test_attention_maps_notebook_runs_in_fast_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    from PIL import Image, ImageDraw

    # A user's image: not square, not the model's size, RGBA, a light "7" on dark.
    image_path = tmp_path / "my_image.png"
    picture = Image.new("RGBA", (50, 40), (0, 0, 0, 255))
    ImageDraw.Draw(picture).line([(15, 8), (35, 8), (22, 34)], fill=(255, 255, 255, 255), width=4)
    picture.save(image_path)

    nb = nbformat.read(ROOT / "colab" / "attention_maps.ipynb", as_version=4)
    _set_parameters(
        nb,
        f'FAST = True\nWORKDIR = ""\nNUM_IMAGES = 3\nIMAGE_PATH = {str(image_path)!r}\n'
        'REPO_URL = ""\nDATA_DIR = ""\nNUM_EVAL_IMAGES = 32\nEPSILONS = [0, 8]',
    )
    _execute(nb)
    text = _text(nb)
    assert f"python: {sys.executable}" in text
    assert "3 test images:" in text and "['att1', 'att2', 'att3']" in text
    assert f"{image_path}: top-3" in text
    assert "pointing" in text and "combined" in text and "(32 test images)" in text
    assert "fgsm eps=0.0314: accuracy" in text
    images = [o for o in _outputs(nb, "display_data") if "image/png" in o.data]
    assert len(images) == 3  # Test images, the user's image, the FGSM plot.


def _repository_url() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_in_colab_and_clones_the_project(path):
    """The badge opens this notebook from the project's repository, and REPO_URL (cloned when
    the notebook runs outside a checkout) is that repository: one address, in pyproject.toml."""
    url = _repository_url()
    owner_repo = url.removeprefix("https://github.com/")
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    badge = (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{owner_repo}/blob/main/colab/{path.name})"
    )
    assert first.source.startswith(badge)
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])][0]
    assert re.search(rf'^REPO_URL = "{re.escape(url)}"', parameters.source, re.M)
    assert "DATA_DIR = " in parameters.source
    readme = (ROOT / "README.md").read_text()
    assert f"https://colab.research.google.com/github/{owner_repo}/blob/main/colab/{path.name}" in (
        readme
    ), "README: the Open in Colab badge of each notebook"


def test_kernel_runs_this_interpreter():
    """The 'python3' kernel must be this venv's Python, or the notebooks test another install."""
    kernelspec = pytest.importorskip("jupyter_client.kernelspec")
    argv = kernelspec.KernelSpecManager().get_kernel_spec("python3").argv
    assert argv[0] in {"python", "python3", f"python3.{sys.version_info[1]}", sys.executable} or (
        os.path.realpath(argv[0]) == os.path.realpath(sys.executable)
    ), argv
