"""The Colab notebooks' install decisions, for every kind of runtime, from fake machine listings.

The listings are what each runtime shows (Colab and Cloud TPU VMs, 2025-2026): TPU v2-v4 and
v5p expose /dev/accel*, v5e and v6e only VFIO groups (/dev/vfio/0), every one a Google PCI
device; Colab's GPU runtimes have /dev/nvidia* and nvidia-smi, and ship `tensorflow`.
"""

import subprocess
import sys

import pytest

from ltpa_jax import colab_setup
from ltpa_jax.colab_setup import Accelerator, InstallPlan, detect_accelerator, plan_install

COMMON_DEV = ["null", "zero", "random", "urandom", "shm", "pts/0", "fuse"]
NVIDIA_SMI_12 = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
|   0  Tesla T4                       Off |   00000000:00:04.0 Off |                    0 |
"""
NVIDIA_SMI_13 = NVIDIA_SMI_12.replace("550.54.15", "580.82.07").replace("12.4", "13.0")
COLAB_GPU_PACKAGES = {"tensorflow": "2.21.0", "jax": "0.12.0.1", "numpy": "2.5.5"}


def test_parse_cuda_version_reads_the_driver_header():
    assert colab_setup.parse_cuda_version(NVIDIA_SMI_12) == (12, 4)
    assert colab_setup.parse_cuda_version(NVIDIA_SMI_13) == (13, 0)
    assert colab_setup.parse_cuda_version("NVIDIA-SMI has failed") is None
    assert colab_setup.parse_cuda_version(None) is None


@pytest.mark.parametrize(
    "dev, env, pci",
    [
        # TPU v2-8 (Colab's "TPU v2" runtime, a TPU VM): 4 chips as /dev/accel0..3.
        (["accel0", "accel1", "accel2", "accel3", "vfio/vfio"], {}, [("0x1ae0", "0x0027")] * 4),
        # TPU v4 and v5p VMs: /dev/accel*, also without readable PCI ids (containers).
        (["accel0", "accel1"], {}, []),
        # TPU v5e-1 (Colab's "v5e-1" runtime): no /dev/accel, one VFIO group, PCI id 0x0063.
        (["vfio/0", "vfio/vfio"], {}, [("0x1ae0", "0x0063")]),
        # TPU v6e: likewise, PCI id 0x006f.
        (["vfio/0", "vfio/1", "vfio/vfio"], {}, [("0x1ae0", "0x006f")] * 2),
        # A VFIO group only (no /sys in a container): still a TPU on a machine without NVIDIA.
        (["vfio/0", "vfio/vfio"], {}, []),
        # Only the environment tells (e.g. /dev not visible).
        ([], {"TPU_ACCELERATOR_TYPE": "v5litepod-1"}, []),
        # Colab's older TPU runtimes.
        ([], {"COLAB_TPU_ADDR": "10.0.0.2:8470"}, []),
        # A future generation with a known PCI id and nothing else.
        ([], {}, [("0x1AE0", "0x0076")]),
    ],
    ids=["v2-8", "v4-accel", "v5e", "v6e", "vfio-only", "env", "colab-tpu-addr", "tpu7x-pci"],
)
def test_every_tpu_generation_is_a_tpu(dev, env, pci):
    accelerator = detect_accelerator(COMMON_DEV + dev, env, pci)
    assert accelerator.kind == "tpu", accelerator


def test_pci_bus_names_the_tpu_generation():
    accelerator = detect_accelerator(["vfio/0"], {}, [("0x1ae0", "0x0063"), ("0x8086", "0x1237")])
    assert "v5e" in accelerator.reason


def test_gpu_from_nvidia_smi_carries_the_driver_cuda_version():
    accelerator = detect_accelerator(COMMON_DEV + ["nvidia0", "nvidiactl"], {}, [], NVIDIA_SMI_12)
    assert accelerator == Accelerator("gpu", accelerator.reason, (12, 4))


def test_gpu_device_without_nvidia_smi_is_a_gpu_of_unknown_cuda():
    accelerator = detect_accelerator(COMMON_DEV + ["nvidia0"], {}, [], None)
    assert (accelerator.kind, accelerator.cuda) == ("gpu", None)


def test_nvidia_gpu_with_vfio_groups_is_a_gpu():
    dev = COMMON_DEV + ["nvidia0", "vfio/0", "vfio/vfio"]
    assert detect_accelerator(dev, {}, [("0x10de", "0x1eb8")], NVIDIA_SMI_12).kind == "gpu"


@pytest.mark.parametrize(
    "dev, pci",
    [
        (COMMON_DEV, []),
        (COMMON_DEV + ["vfio/vfio"], []),  # The VFIO control file alone is no device.
        (COMMON_DEV + ["accelerometer"], [("0x1ae0", "0x9999")]),  # Not a TPU id.
    ],
    ids=["plain", "vfio-control-file", "other-google-device"],
)
def test_cpu_when_nothing_is_there(dev, pci):
    assert detect_accelerator(dev, {"TPU_ACCELERATOR_TYPE": ""}, pci).kind == "cpu"


def test_tpu_runtime_without_tensorflow_gets_tensorflow_cpu_and_jax_tpu():
    plan = plan_install(Accelerator("tpu", ""), {"jax": "0.12.0.1", "numpy": "2.5.5"})
    assert plan == InstallPlan(("cpu", "tpu"))


def test_gpu_runtime_keeps_its_tensorflow_and_picks_cuda_from_the_driver():
    assert plan_install(Accelerator("gpu", "", (12, 4)), COLAB_GPU_PACKAGES).extras == ("cuda12",)
    assert plan_install(Accelerator("gpu", "", (13, 0)), COLAB_GPU_PACKAGES).extras == ("cuda13",)
    assert plan_install(Accelerator("gpu", "", (13, 2)), {"tensorflow-cpu": "2.21.0"}).extras == (
        "cuda13",
    )


def test_gpu_runtime_keeps_its_cuda_plugin_instead_of_adding_a_second():
    packages = {**COLAB_GPU_PACKAGES, "jax_cuda12_plugin": "0.12.0.1"}  # Any spelling of names.
    assert plan_install(Accelerator("gpu", "", (13, 0)), packages).extras == ("cuda12",)


def test_gpu_plugin_too_new_for_the_driver_is_not_installed_again():
    packages = {**COLAB_GPU_PACKAGES, "jax-cuda13-plugin": "0.12.0.1"}
    plan = plan_install(Accelerator("gpu", "", (12, 4)), packages)
    assert plan.extras == () and "uninstall" in plan.notes[0]


def test_gpu_with_old_or_unknown_driver():
    old = plan_install(Accelerator("gpu", "", (11, 8)), COLAB_GPU_PACKAGES)
    assert old.extras == () and "CPU" in old.notes[0]
    unknown = plan_install(Accelerator("gpu", "", None), COLAB_GPU_PACKAGES)
    assert unknown.extras == ("cuda12",) and unknown.notes


def test_tensorflow_found_without_metadata_is_not_installed_again():
    assert plan_install(Accelerator("cpu", ""), {}, tensorflow_found=True).extras == ()
    assert plan_install(Accelerator("cpu", ""), {}, tensorflow_found=False).extras == ("cpu",)


def test_two_tensorflow_distributions_are_reported_not_added_to():
    packages = {"tensorflow": "2.21.0", "tensorflow-cpu": "2.21.0"}
    plan = plan_install(Accelerator("cpu", ""), packages)
    assert plan.extras == () and "tensorflow-cpu 2.21.0" in plan.notes[0]


def test_pip_command_installs_the_checkout_with_the_extras_at_once():
    command = colab_setup.pip_install_command(
        "/py", "/content/ltpa_jax", InstallPlan(("cpu", "tpu"))
    )
    assert command == ["/py", "-m", "pip", "install", "-q", "-e", "/content/ltpa_jax[cpu,tpu]"]
    assert colab_setup.pip_install_command("/py", "/r", InstallPlan(()))[-1] == "/r"


def test_drive_is_mounted_only_on_colab_for_drive_paths():
    assert colab_setup.needs_drive(["/content/drive/MyDrive/x", "/tmp/y"], in_colab=True)
    assert not colab_setup.needs_drive(["/content/drive/MyDrive/x"], in_colab=False)
    assert not colab_setup.needs_drive(["gs://bucket/run", ""], in_colab=True)
    assert colab_setup.local_data_dir("/content/drive/MyDrive/tfds", in_colab=False) == ""
    assert colab_setup.local_data_dir("/content/drive/MyDrive/tfds", in_colab=True) != ""
    assert colab_setup.local_data_dir("/data/tfds", in_colab=False) == "/data/tfds"


def test_changed_imports_are_named_for_a_restart():
    versions = colab_setup.imported_versions({"numpy": object(), "not_watched": object()})
    assert set(versions) == {"numpy"}
    assert colab_setup.changed_since(versions) == []  # Nothing installed in between.
    fake = {"numpy": "2.5.5", "jax": "0.12.0.1"}.get
    assert colab_setup.changed_since({"numpy": "2.0.2", "jax": "0.12.0.1"}, fake) == [
        "numpy 2.0.2 -> 2.5.5"
    ]


def test_probe_runs_on_this_machine():
    """This machine has no accelerator and tensorflow-cpu in the test venv."""
    accelerator, plan = colab_setup.probe()
    assert accelerator.kind in {"cpu", "gpu", "tpu"}
    assert "cpu" not in plan.extras  # TensorFlow is installed here (the tests need it).


def test_module_imports_only_the_standard_library():
    """The notebooks load it by path before the package and its dependencies are installed."""
    script = (
        "import importlib.util, sys\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('colab_setup', {colab_setup.__file__!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "new = {name.split('.')[0] for name in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_tensorflow_says_how_to_install_it(monkeypatch):
    from ltpa_jax import deps

    assert deps.tensorflow_installed()  # The test venv has tensorflow-cpu.
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # As if none were installed.
    assert not deps.tensorflow_installed()
    with pytest.raises(ImportError, match=r'pip install -e "\.\[cpu\]"'):
        deps.require_tensorflow()


def test_import_ltpa_jax_without_tensorflow_fails_with_the_install_command():
    script = "import sys; sys.modules['tensorflow'] = None; import ltpa_jax"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1
    assert "ImportError: ltpa_jax needs TensorFlow" in result.stderr
    assert "tensorflow-cpu 2.21" in result.stderr


# -- keeping the runtime's own requirements ----------------------------------------------------

Installed = colab_setup.Installed
RUNTIME = {
    "numba": Installed("0.61.2", ("llvmlite<0.45,>=0.44.0dev0", "numpy<2.3,>=1.24")),
    "jax": Installed("0.7.2", ("jaxlib<=0.7.2,>=0.7.2", "numpy>=1.26")),  # Replaced: not kept.
    "tensorflow": Installed(
        "2.20.0", ("tensorboard~=2.20.0", 'tomli>=1; python_version < "3.11"', "six")
    ),
    "ipython": Installed("7.34.0", ('pytest; extra == "test"', "traitlets (>=5)")),
    "odd": Installed("1.0", ("alpha[fast]>=1.0", "beta @ https://example.org/beta.whl")),
    "torch": Installed("2.11.0+cu128"),
    "legacy": Installed("1.2-custom"),  # Not a PEP 440 version: no "no downgrade" line.
}


def test_runtime_constraints_keep_other_packages_requirements_and_forbid_downgrades():
    lines = colab_setup.runtime_constraints(RUNTIME, replaced=["JAX"])
    assert lines == [
        "alpha>=1.0",  # Extras dropped: constraints take none.
        "ipython>=7.34.0",  # No downgrade, for every installed distribution...
        "jax>=0.7.2",  # ... replaced ones included.
        "llvmlite<0.45,>=0.44.0dev0",
        "numba>=0.61.2",
        "numpy<2.3,>=1.24",
        "odd>=1.0",
        "tensorboard~=2.20.0",
        "tensorflow>=2.20.0",
        'tomli>=1; python_version < "3.11"',
        "torch>=2.11.0",  # The local label "+cu128" dropped.
        "traitlets>=5",  # Old metadata's parenthesised specifier.
    ]
    report = {"install": [{"metadata": {"name": "Jax_Cuda12.Plugin"}}]}
    assert colab_setup.installed_by(report) == {"jax-cuda12-plugin"}


def test_relax_drops_the_tightest_upper_bounds_of_the_blamed_package_first():
    lines = [
        "grpcio-status>=1.71.2",
        "protobuf!=4.21.0,<6.0.0dev,>=3.20.2",  # google-ai-generativelanguage
        "protobuf<6.0dev,>=5.26.1",  # grpcio-status: the same bound, written otherwise.
        "protobuf<7.0.0,>=5.29.1",  # ydf
        "protobuf>=5.29.6",  # No downgrade.
        'protobuf>=4.25.2; python_version >= "3.11"',
    ]
    kept, dropped = colab_setup.relax(lines, {"protobuf"})
    assert dropped == ["protobuf!=4.21.0,<6.0.0dev,>=3.20.2", "protobuf<6.0dev,>=5.26.1"]
    kept, dropped = colab_setup.relax(kept, {"Protobuf"})
    assert dropped == ["protobuf<7.0.0,>=5.29.1"]
    kept, dropped = colab_setup.relax(kept, {"protobuf"})  # Only lower bounds left: all go.
    assert kept == ["grpcio-status>=1.71.2"] and len(dropped) == 2
    assert colab_setup.relax(["h5py>=3.16.0", "numpy==2.1.3"], {"h5py"}) == (
        ["numpy==2.1.3"],
        ["h5py>=3.16.0"],
    )


def _wheel(folder, name: str, version: str, requires=()):
    """A minimal wheel (metadata only) in `folder`, for pip's resolver."""
    import zipfile

    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    files = {
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/RECORD": "",
    }
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


def test_pip_keeps_the_runtime_requirements_given_as_constraints(tmp_path):
    """Real pip, offline: the install wants numpy>=2.2, the runtime's numba numpy<2.3: pip
    picks 2.2 with the constraints (2.5 without), and fails when they cannot all hold."""
    index = tmp_path / "index"
    index.mkdir()
    for version in ("2.1.3", "2.2.6", "2.5.5"):
        _wheel(index, "numpy", version)
    _wheel(index, "project", "1.0", ["numpy>=2.2"])
    _wheel(index, "strict", "1.0", ["numpy>=2.5"])

    def resolve(target, lines):
        constraints = tmp_path / "constraints.txt"
        constraints.write_text("\n".join(lines) + "\n")
        report = tmp_path / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        command += ["--no-index", "--find-links", str(index), "--report", str(report)]
        command += ["-c", str(constraints), target]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            return result.stdout + result.stderr  # pip's account of a conflict, unabridged.
        import json

        installed = json.loads(report.read_text())["install"]
        return {i["metadata"]["name"]: i["metadata"]["version"] for i in installed}

    lines = colab_setup.runtime_constraints({"numba": RUNTIME["numba"]}, replaced=["jax"])
    assert resolve("project", [])["numpy"] == "2.5.5"
    assert resolve("project", lines)["numpy"] == "2.2.6"
    conflict = resolve("strict", lines)
    assert "ResolutionImpossible" in conflict
    assert colab_setup.conflicting_constraints(conflict) == {"numpy"}  # pip's own account.
    assert "ResolutionImpossible" in resolve("project", ["numpy>=2.5.5", *lines])  # No downgrade
    kept, dropped = colab_setup.relax(["numpy>=2.5.5", *lines], {"numpy"})
    assert dropped == ["numpy<2.3,>=1.24"] and resolve("project", kept)["numpy"] == "2.5.5"


def _fake_pip(outcomes):
    """A stand-in for subprocess.run: writes a report for dry runs, answers the rest in turn."""
    import json

    calls = []

    def run(command, **kwargs):
        calls.append(command)
        if "--dry-run" in command:
            report = command[command.index("--report") + 1]
            with open(report, "w") as f:
                json.dump({"install": [{"metadata": {"name": "jax", "version": "0.12.0.1"}}]}, f)
            return subprocess.CompletedProcess(command, 0)
        if "-c" in command:
            with open(command[command.index("-c") + 1]) as f:
                calls.append(f.read().splitlines())
        returncode, stderr = outcomes.pop(0)
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    return run, calls


PIP_CONFLICT = """ERROR: Cannot install None because these package versions have conflicting
dependencies.

The conflict is caused by:
    ltpa-jax 0.1.0 depends on numpy<2.6 and >=2.4
    The user requested (constraint) numpy<2.3,>=1.24

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/..."""


def test_install_passes_the_runtime_requirements_as_constraints():
    run, calls = _fake_pip([(0, "")])
    notes = colab_setup.install("/py", "/r", InstallPlan(("cuda12",)), RUNTIME, run)
    assert notes == []
    dry_run, constrained, constraints = calls
    assert "--dry-run" in dry_run and dry_run[-1] == "/r[cuda12]"
    assert constrained[-2:] == ["-e", "/r[cuda12]"] and "--dry-run" not in constrained
    assert "numpy<2.3,>=1.24" in constraints
    assert not any(line.startswith("jaxlib") for line in constraints)  # jax is replaced.
    assert "jax>=0.7.2" in constraints


def test_constraints_that_conflict_with_the_project_are_dropped_and_named():
    run, calls = _fake_pip([(1, PIP_CONFLICT), (0, "")])
    notes = colab_setup.install("/py", "/r", InstallPlan(()), RUNTIME, run)
    assert colab_setup.conflicting_constraints(PIP_CONFLICT) == {"numpy"}
    first, second = calls[2], calls[4]  # The constraints of the two constrained runs.
    assert "numpy<2.3,>=1.24" in first and "tensorboard~=2.20.0" in first
    assert set(first) - set(second) == {"numpy<2.3,>=1.24"}
    assert len(notes) == 1 and "left out: numpy<2.3,>=1.24." in notes[0]


def test_a_conflict_with_nothing_left_to_relax_installs_without_constraints():
    blamed_elsewhere = PIP_CONFLICT.replace("(constraint) numpy", "(constraint) not-in-the-runtime")
    run, calls = _fake_pip([(1, blamed_elsewhere), (0, "")])
    notes = colab_setup.install("/py", "/r", InstallPlan(()), RUNTIME, run)
    assert len(calls) == 4  # Dry run, one constrained run (and its constraints), the plain one.
    assert calls[-1] == ["/py", "-m", "pip", "install", "-q", "-e", "/r"]
    assert len(notes) == 1 and "without them" in notes[0]


def test_install_without_constraints_when_pip_fails_for_another_reason():
    run, calls = _fake_pip([(1, "ERROR: No matching distribution found for jax"), (0, "")])
    notes = colab_setup.install("/py", "/r", InstallPlan(()), RUNTIME, run)
    assert len(notes) == 1 and "without them" in notes[0]
    assert calls[-1] == ["/py", "-m", "pip", "install", "-q", "-e", "/r"]  # Plain, at the end.


def test_check_install_reads_a_colab_freeze_and_its_requirements(tmp_path):
    """colab/check_install.py (run by hand: it needs PyPI) parses what it is given."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("check_install", f"{ROOT}/colab/check_install.py")
    check_install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_install)
    freeze = tmp_path / "pip-freeze.gpu.txt"
    freeze.write_text(
        "# Do not modify this file directly\n"
        "google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz\n"
        "Jax_CUDA12_Plugin==0.7.2\n"
        "torch==2.11.0+cu128\n"
        "numpy==2.1.3\n"
    )
    assert check_install.read_freeze(freeze) == {
        "jax-cuda12-plugin": "0.7.2",
        "torch": "2.11.0+cu128",
        "numpy": "2.1.3",
    }
    metadata = {
        "requires_dist": [
            "numpy<2.3,>=1.24",
            'tomli>=1; python_version < "3.11"',
            'pytest; extra == "test"',
        ]
    }
    environment = {"python_version": "3.13", "sys_platform": "linux"}
    needed = check_install.requirements_of(metadata, environment)
    assert [str(r) for r in needed] == ["numpy<2.3,>=1.24"]


def test_a_bucket_workdir_adds_google_cloud_storage_where_it_is_missing():
    tpu = Accelerator("tpu", "")
    assert colab_setup.uses_buckets(["/content/drive/x", "gs://bucket/run"])
    assert not colab_setup.uses_buckets(["/content/drive/x", ""])
    plan = plan_install(tpu, {"numpy": "2.1.3"}, paths=["gs://bucket/run", ""])
    assert plan.extras == ("gcs", "cpu", "tpu")
    plan = plan_install(tpu, {"google_cloud_storage": "3.13.1"}, paths=["gs://bucket/run"])
    assert plan.extras == ("cpu", "tpu")  # Colab has it.
    assert plan_install(tpu, {}, paths=["/content/drive/x"]).extras == ("cpu", "tpu")
