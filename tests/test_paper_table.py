"""`ltpa-analyze table`: the paper's tables beside this project's runs, read from their files.

`format_tables` is checked on made-up results (pure); the command runs on a folder of real
runs made here: one short smoke run on cluttered digits, copied under a table row's config
name, under a name no row has, and (without its final metrics) as an unfinished run.
"""

import json
import re
import shutil

import pytest
from conftest import run_tool

from configs import smoke
from ltpa_jax import paper, rundir, train
from ltpa_jax.configs import load_module


def _row_line(text: str, config: str) -> str:
    (line,) = [x for x in text.splitlines() if x.startswith("|") and f"| `{config}` |" in x]
    return line


def _ours(line: str) -> str:
    return line.rstrip(" |").rsplit("|", 1)[1].strip()


def test_every_table_row_names_a_config_that_loads_with_its_preset():
    for table in paper.TABLES:
        for row in table.rows:
            config = load_module(str(paper.CONFIG_DIR / f"{row.config}.py")).get_config()
            assert config.model.preset == row.preset, row.config


def test_every_config_docstring_quotes_its_rows_numbers_and_command():
    for table in paper.TABLES:
        for row in table.rows:
            doc = load_module(str(paper.CONFIG_DIR / f"{row.config}.py")).__doc__
            assert f"ltpa-train --config=configs/{row.config}.py" in doc, row.config
            for number in (row.paper, row.source_error):
                if number is not None:
                    assert f"{number:.2f}%" in doc, (row.config, number)


def test_format_tables_shows_numbers_only_for_finished_runs():
    results = {
        "cifar100_vgg_att3_concat_pc": paper.RunResult(
            "cifar100_vgg_att3_concat_pc", "finished", 351_000, 22.5
        ),
        "cifar10_vgg": paper.RunResult("cifar10_vgg", "unfinished", 4_000),
        "cub_vgg_official": paper.RunResult(
            "cub_vgg_official", "finished", 14_720, 35.0, ("num_epochs: 10 (config: 320)",)
        ),
        "my_run": paper.RunResult("my_run", "finished", 8, 50.0),
    }
    text = paper.format_tables(results)
    line = _row_line(text, "cifar100_vgg_att3_concat_pc")
    assert "| 22.97 | 22.62 (reference) | 22.50 (`cifar100_vgg_att3_concat_pc`, step 351000) |" in (
        line
    )
    assert _ours(_row_line(text, "cifar10_vgg")) == "unfinished (`cifar10_vgg`, step 4000)"
    assert "30.71 (official)" in _row_line(text, "cifar100_vgg")
    assert _ours(_row_line(text, "cifar100_vgg")) == "missing"
    assert "num_epochs: 10 (config: 320)" in text  # A run that is not the config says so.
    assert "### Other runs" in text and "| `my_run` | 50.00 (`my_run`, step 8) |" in text
    for table in paper.TABLES:
        assert f"### {table.title}" in text
        for row in table.rows:
            if row.config not in results:
                assert _ours(_row_line(text, row.config)) == "missing"  # Never a number.


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder: a finished smoke run under a table row's name and another name, and an
    unfinished copy."""
    root = tmp_path_factory.mktemp("runs")
    config = smoke.get_config()
    config.dataset = "cluttered_digits"
    config.num_train_steps = 2
    config.num_picture_images = 0
    finished = root / "cifar10_vgg_att3_concat_pc"
    metrics = train.train_and_evaluate(config, str(finished))
    shutil.copytree(finished, root / "smoke_digits")
    shutil.copytree(finished, root / "cifar100_vgg")
    (root / "cifar100_vgg" / "final_metrics.json").unlink()
    return root, metrics


@pytest.mark.slow
def test_table_command_prints_the_runs_and_marks_the_missing(runs):
    root, metrics = runs
    result = run_tool("analyze", "table", f"--runs={root}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    final = json.loads((root / "smoke_digits" / "final_metrics.json").read_text())
    error = 100 * (1 - final["accuracy"])
    line = _row_line(text, "cifar10_vgg_att3_concat_pc")
    assert _ours(line) == f"{error:.2f} (`cifar10_vgg_att3_concat_pc`, step 2)"
    assert "6.45 (official)" in line
    # The smoke run is not configs/cifar10_vgg_att3_concat_pc.py: the table says where.
    note = next(x for x in text.splitlines() if x.startswith("- `cifar10_vgg_att3_concat_pc`:"))
    assert "differs from configs/cifar10_vgg_att3_concat_pc.py" in note
    assert "dataset: 'cluttered_digits' (config: 'cifar10')" in note
    assert re.search(r"model\.width: 0\.0625 \(config: 1\.0\)", note)
    assert _ours(_row_line(text, "cifar100_vgg")) == "unfinished (`cifar100_vgg`, step 2)"
    assert f"| `smoke_digits` | {error:.2f} (`smoke_digits`, step 2) |" in text
    assert _ours(_row_line(text, "cub_vgg_att3_concat_pc_official")) == "missing"
    assert text.count("| missing |") == sum(len(t.rows) for t in paper.TABLES) - 2


def test_collect_refuses_a_runs_folder_that_is_not_one(tmp_path):
    with pytest.raises(rundir.RunDirError, match="is not a folder"):
        paper.collect(tmp_path / "none")


@pytest.mark.slow
def test_table_command_refuses_a_runs_folder_that_is_not_one(tmp_path):
    result = run_tool("analyze", "table", f"--runs={tmp_path / 'none'}", timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --runs={tmp_path}")
