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
