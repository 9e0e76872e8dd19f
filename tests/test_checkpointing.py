"""Checkpoints: quick successive saves, keep_best, the finite check, damaged and cut-off saves.

Tiny pytrees only (no model is compiled): what is tested is the file handling around Orbax.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from ltpa_jax import checkpointing, paths


def _state(seed: float) -> dict:
    """A small train-state-like tree: float params and stats, an integer count."""
    seed = float(seed)
    return {
        "params": {"dense": {"kernel": jnp.full((4, 3), seed), "bias": jnp.arange(3.0) + seed}},
        "batch_stats": {"bn": {"mean": jnp.full((3,), -seed)}},
        "opt_state": {"count": jnp.array(int(seed), jnp.int32), "mu": jnp.zeros((4, 3))},
    }


def _save_steps(directory, steps, *, keep=10, keep_best=0, accuracies=None):
    manager = checkpointing.create_manager(directory, keep, 1, keep_best=keep_best)
    for i, step in enumerate(steps):
        metrics = {"accuracy": accuracies[i]} if accuracies else None
        assert checkpointing.save(manager, step, _state(step), metrics=metrics)
    manager.wait_until_finished()
    manager.close()


def _assert_state(tree, seed: float):
    expected = _state(seed)
    for key in ("params", "batch_stats"):
        for a, b in zip(jax.tree.leaves(tree[key]), jax.tree.leaves(expected[key]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _ocdbt_data_files(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, list((step_dir / "state").rglob("*"))
    return files


# -- saves in quick succession ------------------------------------------------------------------


@pytest.mark.parametrize("async_saves", [True, False], ids=["async", "blocking"])
def test_saves_in_quick_succession_all_read_back(tmp_path, async_saves):
    directory = tmp_path / "checkpoints"
    manager = checkpointing.create_manager(
        directory, keep=4, every_steps=1, async_saves=async_saves
    )
    for step in range(1, 25):  # Back to back, every step, as the race once needed.
        assert checkpointing.save(manager, step, _state(step))
        if not async_saves:  # A blocking save has committed its step when it returns.
            assert checkpointing.list_steps(directory)[-1] == step
    manager.wait_until_finished()
    manager.close()
    assert checkpointing.list_steps(directory) == [21, 22, 23, 24]
    assert not [p for p in directory.iterdir() if checkpointing.TMP_SUFFIX in p.name]
    for step in (21, 22, 23, 24):
        loaded = checkpointing.load_variables(directory / str(step))
        assert loaded["step"] == step
        _assert_state(loaded, step)
    state, step, notes = checkpointing.restore_latest(directory, _state(0))
    assert (step, notes) == (24, [])
    _assert_state(state, 24)


def test_save_at_an_already_saved_step_is_a_no_op(tmp_path):
    manager = checkpointing.create_manager(tmp_path, keep=3, every_steps=5)
    assert checkpointing.save(manager, 5, _state(5))
    assert not checkpointing.save(manager, 7, _state(7))  # Off the interval.
    assert not checkpointing.save(manager, 5, _state(6), force=True)  # SIGTERM after a save.
    manager.wait_until_finished()
    manager.close()
    assert checkpointing.load_variables(tmp_path)["step"] == 5


def test_relative_local_directory_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _save_steps("run/checkpoints", [1, 2])
    assert checkpointing.list_steps("run/checkpoints") == [1, 2]
    assert checkpointing.load_variables("run/checkpoints")["step"] == 2
    assert checkpointing.restore_latest("run/checkpoints", _state(0))[1] == 2


def test_keep_best_keeps_the_most_accurate_step_after_rotation_and_restart(tmp_path):
    accuracies = [0.1, 0.9, 0.3, 0.2, 0.4, 0.5]
    _save_steps(tmp_path, [1, 2, 3, 4, 5, 6], keep=2, keep_best=1, accuracies=accuracies)
    assert checkpointing.list_steps(tmp_path) == [2, 5, 6]
    # A new process (resume) ranks the steps already saved by their stored metrics.
    manager = checkpointing.create_manager(tmp_path, keep=2, every_steps=1, keep_best=1)
    assert manager.best_step() == 2
    checkpointing.save(manager, 7, _state(7), metrics={"accuracy": 0.05})
    checkpointing.save(manager, 8, _state(8))  # Saved without an evaluation: no metrics.
    manager.wait_until_finished()
    manager.close()
    assert checkpointing.list_steps(tmp_path) == [2, 7, 8]
    _assert_state(checkpointing.load_variables(tmp_path / "2"), 2)


def test_without_keep_best_only_the_latest_are_kept(tmp_path):
    _save_steps(tmp_path, [1, 2, 3, 4], keep=2, accuracies=[0.9, 0.1, 0.1, 0.1])
    assert checkpointing.list_steps(tmp_path) == [3, 4]


# -- finite check -------------------------------------------------------------------------------


def test_is_finite_on_finite_nan_and_inf_trees():
    state = _state(1.0)
    assert checkpointing.is_finite(state)
    nan = jax.tree.map(lambda x: x, state)
    nan["params"]["dense"]["bias"] = nan["params"]["dense"]["bias"].at[1].set(jnp.nan)
    assert not checkpointing.is_finite(nan)
    inf = jax.tree.map(lambda x: x, state)
    inf["opt_state"]["mu"] = inf["opt_state"]["mu"].at[0, 0].set(-jnp.inf)
    assert not checkpointing.is_finite(inf)
    assert checkpointing.is_finite({"count": jnp.array(3), "flag": jnp.array(True)})
    assert checkpointing.is_finite({})


def test_is_finite_on_a_tree_sharded_over_devices():
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    values = np.ones((jax.device_count() * 2,), np.float32)
    assert checkpointing.is_finite({"x": jax.device_put(values, sharding)})
    values[-1] = np.nan  # On the last device only.
    assert not checkpointing.is_finite({"x": jax.device_put(values, sharding)})


# -- damaged checkpoints ------------------------------------------------------------------------


def _truncate_data_file(step_dir):
    for path in _ocdbt_data_files(step_dir):
        path.write_bytes(path.read_bytes()[:10])


def _delete_data_file(step_dir):
    for path in _ocdbt_data_files(step_dir):
        path.unlink()


def _truncate_tree_metadata(step_dir):
    path = step_dir / "state" / "_METADATA"
    path.write_bytes(path.read_bytes()[:20])


def _delete_manifest(step_dir):
    (step_dir / "state" / "manifest.ocdbt").unlink()


def _delete_meta(step_dir):
    (step_dir / "meta" / "metadata").unlink()


def _delete_state(step_dir):
    for path in sorted((step_dir / "state").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (step_dir / "state").rmdir()


DAMAGE = [
    _truncate_data_file,
    _delete_data_file,
    _truncate_tree_metadata,
    _delete_manifest,
    _delete_meta,
    _delete_state,
]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_damaged_newest_checkpoint_is_moved_aside_and_the_previous_one_restored(tmp_path, damage):
    _save_steps(tmp_path, [2, 4, 6])
    damage(tmp_path / "6")
    manager = checkpointing.create_manager(tmp_path, keep=3, every_steps=2)
    state, step, notes = checkpointing.restore_latest(manager, _state(0))
    assert step == 4
    _assert_state(state, 4)
    assert len(notes) == 1 and "step 6" in notes[0] and str(tmp_path / "6") in notes[0]
    assert str(tmp_path / "damaged" / "6") in notes[0]
    assert (tmp_path / "damaged" / "6" / "meta").is_dir()  # Kept, not deleted.
    assert not (tmp_path / "6").exists()
    assert manager.all_steps() == [2, 4] and checkpointing.list_steps(tmp_path) == [2, 4]
    # Training goes on from step 4 and saves step 6 again, beside the damaged copy.
    assert checkpointing.save(manager, 6, _state(60))
    manager.wait_until_finished()
    manager.close()
    _assert_state(checkpointing.load_variables(tmp_path), 60)


def test_every_checkpoint_damaged_gives_the_target_and_a_note_per_step(tmp_path):
    _save_steps(tmp_path, [1, 2])
    _truncate_tree_metadata(tmp_path / "1")
    _truncate_data_file(tmp_path / "2")
    target = _state(0)
    state, step, notes = checkpointing.restore_latest(tmp_path, target)
    assert step == 0 and state is target
    assert ["step 2" in notes[0], "step 1" in notes[1]] == [True, True]
    assert sorted(p.name for p in (tmp_path / "damaged").iterdir()) == ["1", "2"]


def test_a_checkpoint_damaged_twice_at_the_same_step_keeps_both_copies(tmp_path):
    _save_steps(tmp_path, [1, 2])
    _truncate_data_file(tmp_path / "2")
    assert checkpointing.restore_latest(tmp_path, _state(0))[1] == 1
    _save_steps(tmp_path, [2])
    _truncate_data_file(tmp_path / "2")
    assert checkpointing.restore_latest(tmp_path, _state(0))[1] == 1
    assert sorted(p.name for p in (tmp_path / "damaged").iterdir()) == ["2", "2-1"]


def test_an_intact_checkpoint_of_another_model_is_refused_and_left_in_place(tmp_path):
    _save_steps(tmp_path, [3])
    other = _state(0)
    other["params"]["dense"]["kernel"] = jnp.zeros((5, 3))  # Another width.
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match="step 3.*intact"):
        checkpointing.restore_latest(tmp_path, other)
    assert checkpointing.list_steps(tmp_path) == [3]
    assert not (tmp_path / "damaged").exists()


def test_load_variables_skips_a_damaged_newest_step_without_moving_it(tmp_path):
    _save_steps(tmp_path, [1, 2])
    _truncate_data_file(tmp_path / "2")
    loaded = checkpointing.load_variables(tmp_path)
    assert loaded["step"] == 1
    _assert_state(loaded, 1)
    assert len(loaded["notes"]) == 1 and "step 2" in loaded["notes"][0]
    assert (tmp_path / "2").is_dir() and not (tmp_path / "damaged").exists()


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_load_variables_of_a_damaged_step_folder_names_step_path_and_the_others(tmp_path, damage):
    _save_steps(tmp_path, [1, 2])
    damage(tmp_path / "2")
    with pytest.raises(checkpointing.DamagedCheckpointError) as raised:
        checkpointing.load_variables(tmp_path / "2")
    message = str(raised.value)
    assert "step 2" in message and str(tmp_path / "2") in message and "[1]" in message


def test_load_variables_without_checkpoint_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no Orbax checkpoint"):
        checkpointing.load_variables(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no Orbax checkpoint"):
        checkpointing.load_variables(tmp_path / "missing")


# -- leftovers of interrupted saves -------------------------------------------------------------


def _uncommit(step_dir):
    (step_dir / checkpointing.COMMIT_MARKER).unlink()


def test_start_up_cleaning_removes_tmp_folders_and_sets_aside_uncommitted_steps(tmp_path):
    _save_steps(tmp_path, [2, 4, 6])
    interrupted = tmp_path / "8.orbax-checkpoint-tmp"
    (interrupted / "state.orbax-checkpoint-tmp").mkdir(parents=True)
    (interrupted / "state.orbax-checkpoint-tmp" / "manifest.ocdbt").write_bytes(b"partial")
    _uncommit(tmp_path / "2")  # Rotation killed while deleting step 2.
    _uncommit(tmp_path / "6")  # A save written in place (GCS) and cut off.
    assert checkpointing.list_steps(tmp_path) == [4]  # Never counted, cleaned or not.

    notes = checkpointing.clean_partial_checkpoints(tmp_path)

    assert len(notes) == 3
    assert "step 8" in notes[-1] and str(interrupted) in notes[-1]
    assert not interrupted.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "damaged"]
    assert sorted(p.name for p in (tmp_path / "damaged").iterdir()) == ["2", "6"]
    assert any("step 6" in n and str(tmp_path / "damaged" / "6") in n for n in notes)
    manager = checkpointing.create_manager(tmp_path, keep=3, every_steps=2)
    assert manager.all_steps() == [4]
    state, step, notes = checkpointing.restore_latest(manager, _state(0))
    assert (step, notes) == (4, [])
    _assert_state(state, 4)
    manager.close()
    assert checkpointing.clean_partial_checkpoints(tmp_path) == []  # Nothing left to do.


def test_cleaning_a_missing_or_empty_directory_does_nothing(tmp_path):
    assert checkpointing.clean_partial_checkpoints(tmp_path / "missing") == []
    assert checkpointing.clean_partial_checkpoints(tmp_path) == []
    assert checkpointing.restore_latest(tmp_path / "missing", {"x": jnp.ones(2)})[1:] == (0, [])


def test_load_variables_refuses_an_uncommitted_step_folder(tmp_path):
    _save_steps(tmp_path, [1, 2])
    _uncommit(tmp_path / "2")
    with pytest.raises(checkpointing.DamagedCheckpointError, match="not a finished checkpoint"):
        checkpointing.load_variables(tmp_path / "2")
    assert checkpointing.load_variables(tmp_path)["step"] == 1


# -- a URL workdir (gs://) ----------------------------------------------------------------------


def _copy_tree(source, destination):
    for path in source.rglob("*"):
        if path.is_file():
            target = destination / path.relative_to(source).as_posix()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def test_start_up_cleaning_and_listing_on_a_gs_url(tmp_path, gcs):
    bucket = gcs.path / "run" / "checkpoints"
    _save_steps(tmp_path, [2, 4, 6])
    _uncommit(tmp_path / "6")
    _copy_tree(tmp_path, bucket)
    (bucket / "8.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
    (bucket / "8.orbax-checkpoint-tmp" / "state" / "manifest.ocdbt").write_bytes(b"partial")
    assert not (epath.Path(os.getcwd()) / "gs:").exists()
    directory = f"gs://{gcs.name}/run/checkpoints"
    assert os.fspath(paths.as_path(directory)) == directory  # Not made "<cwd>/gs:/...".
    assert checkpointing.list_steps(directory) == [2, 4]

    notes = checkpointing.clean_partial_checkpoints(directory)

    assert len(notes) == 2
    assert f"{directory}/8.orbax-checkpoint-tmp" in notes[1]
    assert f"{directory}/damaged/6" in notes[0]
    assert sorted(p.name for p in bucket.iterdir()) == ["2", "4", "damaged"]
    assert (bucket / "damaged" / "6" / "state" / "manifest.ocdbt").exists()  # Kept.
    assert checkpointing.list_steps(directory) == [2, 4]
    # Everything stayed in the checkpoints folder ("run/": TensorFlow's marker of the folder).
    assert all(name.startswith("run/checkpoints/") or name == "run/" for name in gcs.names())
    assert not (epath.Path(os.getcwd()) / "gs:").exists()  # Nothing went to the local disk.


def test_reading_an_empty_gs_url_says_what_is_missing(gcs):
    directory = f"gs://{gcs.name}/run/checkpoints"
    (gcs.path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"{directory} holds no Orbax"):
        checkpointing.load_variables(directory)
    assert checkpointing.clean_partial_checkpoints(directory) == []
    assert checkpointing.list_steps(f"gs://{gcs.name}/run/elsewhere") == []


def test_orbax_saves_rotates_and_restores_in_a_bucket(gcs):
    """Orbax's own GCS path: TensorStore's gcs driver for the arrays, commit files instead of
    renames, google-cloud-storage for the bucket; background saves in quick succession."""
    directory = f"gs://{gcs.name}/run/checkpoints"
    _save_steps(directory, [1, 2, 3], keep=2)
    assert checkpointing.list_steps(directory) == [2, 3]
    assert "run/checkpoints/3/commit_success.txt" in gcs.names()
    assert not gcs.names("run/checkpoints/1/")  # Rotated out.
    _assert_state(checkpointing.load_variables(directory), 3)
    _assert_state(checkpointing.load_variables(f"{directory}/2"), 2)
