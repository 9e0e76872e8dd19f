"""ltpa-compare on a tiny budget (two mechanisms, a missing one), and the post-hoc --method of
ltpa-attend and ltpa-analyze localization on the runs it trained."""

import json
import os

import numpy as np
import pytest
from conftest import run_tool

from ltpa_jax import analyze, attend, compare, rundir

TINY_CONFIG = """
from ltpa_jax.configs import default


def get_config():
    c = default.get_config()
    c.dataset = "cluttered_digits"
    c.image_size = 32
    c.model.num_classes = 10
    c.model.width = 1 / 16
    c.model.conv_impl = "xla"
    c.model.num_taps = {num_taps}
    c.model.squeeze_excitation = {squeeze_excitation}
    c.learning_rate = 0.05
    return c
"""


def test_step_seconds_read_from_the_last_progress_line():
    output = (
        "[2/4  50%] train_loss=2.3  9.00 steps/s  ETA 00:00:01\n"
        "[4/4 100%] train_loss=2.1  train_learning_rate=0.05  2.50 steps/s  ETA 00:00:00\n"
    )
    assert compare.step_seconds(output, 4) == pytest.approx(0.4)
    assert compare.step_seconds(output, 8) is None


@pytest.mark.slow
def test_compare_trains_scores_and_tabulates_with_one_budget(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "digits_ltpa.py").write_text(TINY_CONFIG.format(num_taps=3, squeeze_excitation=0))
    (configs / "digits_se.py").write_text(TINY_CONFIG.format(num_taps=0, squeeze_excitation=2))
    out = tmp_path / "out"
    table, results = compare.compare(
        str(out),
        mechanisms=("ltpa", "se", "ram"),
        steps=2,
        batch_size=16,
        test_images=16,
        configs_dir=str(configs),
    )
    assert results["ram"]["status"] == "missing"  # No configs/digits_ram.py in that folder.
    ltpa, se = results["ltpa"], results["se"]
    assert ltpa["status"] == se["status"] == "ok"
    assert ltpa["parameters"] != se["parameters"] and ltpa["step_seconds"] > 0
    assert set(ltpa["methods"]) == {"learned", "gradcam"} and set(se["methods"]) == {"gradcam"}
    learned = ltpa["methods"]["learned"]
    assert set(learned["test"]["maps"]) == {"att1", "att2", "att3", "combined"}
    for split in ("test", "shifted"):
        assert 0 <= learned[split]["accuracy"] <= 1
        for scores in learned[split]["maps"].values():
            assert 0 <= scores["pointing"] <= 1 and 0 <= scores["mass"] <= 1
    assert set(se["methods"]["gradcam"]["shifted"]["maps"]) == {"att3"}
    # Both runs trained with the same budget: 2 steps of 16 images, 16 test images.
    for name in ("ltpa", "se"):
        config = json.loads((out / name / "config.json").read_text())
        assert (config["num_digits_train"], config["batch_size"]) == (32, 16)
        assert json.loads((out / name / "final_metrics.json").read_text())["step"] == 2
    assert "| ltpa | learned: att1 |" in table and "| se | gradcam: att3 |" in table
    assert "| ram | missing: no config file" in table
    assert (out / "comparison.md").read_text().strip() == table

    # The same runs' post-hoc maps through ltpa-attend and ltpa-analyze localization.
    written, errors = attend.attend(
        str(out / "ltpa"), num_images=8, batch_size=8, method="gradcam", layers=("att2",)
    )
    assert not errors and "test_gradcam_step2" in written[0]
    with np.load(written[0]) as npz:
        assert npz["map_att2"].shape == (8, 32, 32) and "map_att1" not in npz
    result = run_tool(
        "analyze",
        "localization",
        f"--workdir={out / 'se'}",
        "--method=gradcam",
        "--layers=att3",
        "--num_images=16",
        "--batch_size=16",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "att3" in result.stdout
    assert os.path.isfile(out / "se" / "analysis" / "localization_test_gradcam_step2.csv")
    with pytest.raises(ValueError, match="--method=gradcam"):  # No learned maps to score.
        analyze.localization(rundir.open_run(str(out / "se")), num_images=16)
