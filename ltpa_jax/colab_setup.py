"""What a fresh Colab (or any) runtime needs installed, decided from what it already has.

The notebooks in `colab/` load this file by its path before the package is installed, so it
imports nothing outside the standard library. Pure functions decide; `probe` reads the machine:

    accelerator = detect_accelerator(dev_entries, os.environ, pci_devices, nvidia_smi_output)
    plan = plan_install(accelerator, installed_distributions, tensorflow_found)
    subprocess.run(pip_install_command(sys.executable, repo, plan), check=True)

The install never adds a second TensorFlow (Colab's GPU runtimes ship `tensorflow`, its TPU
runtimes none: the extra `[cpu]` brings `tensorflow-cpu` only where no TensorFlow is installed)
and never a second JAX CUDA plugin; every requirement is a range, so pip keeps what the runtime
has where it fits and otherwise upgrades it to the range that the tests pass with.
"""

import dataclasses
import glob
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping

# Google's PCI vendor id and the device ids of its TPU chips (as in jax/_src/hardware_utils.py).
GOOGLE_PCI_VENDOR = "0x1ae0"
TPU_PCI_DEVICES = {
    "0x0027": "v2/v3",
    "0x005e": "v4",
    "0x0062": "v5p",
    "0x0063": "v5e",
    "0x006f": "v6e",
    "0x0076": "tpu7x",
    "0x007c": "tpu8t",
    "0x0083": "tpu8i",
}
# Environment variables that TPU runtimes set: Cloud TPU VMs and Colab's current TPU runtimes
# (TPU_ACCELERATOR_TYPE, e.g. "v5litepod-1"), Colab's older TPU runtimes (COLAB_TPU_ADDR).
TPU_ENV_VARS = ("TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR")
# Distributions that install the `tensorflow` package: any one of them is enough.
TENSORFLOW_DISTRIBUTIONS = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-gpu",
    "tensorflow-intel",
    "tensorflow-tpu",
    "tf-nightly",
    "tf-nightly-cpu",
)
# Modules that Colab or a user may have imported before the install, and their distributions.
IMPORT_WATCH = {
    "numpy": "numpy",
    "scipy": "scipy",
    "ml_dtypes": "ml_dtypes",
    "jax": "jax",
    "jaxlib": "jaxlib",
    "flax": "flax",
    "google.protobuf": "protobuf",
    "tensorboard": "tensorboard",
}
# The project's extra for each JAX CUDA plugin: the driver must support that CUDA major version.
CUDA_EXTRAS = {12: "cuda12", 13: "cuda13"}
CUDA_PLUGINS = {12: "jax-cuda12-plugin", 13: "jax-cuda13-plugin"}


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """What the runtime has.

    Attributes:
      kind: "tpu", "gpu" or "cpu".
      reason: what showed it, for the notebook to print.
      cuda: (major, minor) of the newest CUDA the NVIDIA driver supports, if known.
    """

    kind: str
    reason: str
    cuda: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class InstallPlan:
    """The project's extras to install, and what the user should know about the choice."""

    extras: tuple[str, ...]
    notes: tuple[str, ...] = ()


def parse_cuda_version(nvidia_smi_output: str | None) -> tuple[int, int] | None:
    """The "CUDA Version: 12.4" of `nvidia-smi`'s header (the driver's newest CUDA), or None."""
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi_output or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def detect_accelerator(
    dev_entries: Iterable[str],
    environ: Mapping[str, str],
    pci_devices: Iterable[tuple[str, str]] = (),
    nvidia_smi_output: str | None = None,
) -> Accelerator:
    """The runtime's accelerator, from what the machine shows.

    Args:
      dev_entries: paths under /dev, relative to it ("accel0", "vfio/0", "vfio/vfio",
        "nvidia0", ...).
      environ: the environment variables.
      pci_devices: (vendor, device) ids of the PCI devices, e.g. ("0x1ae0", "0x0063").
      nvidia_smi_output: what `nvidia-smi` printed, None where it is missing or failed.

    Returns:
      TPU for any TPU generation: the runtime's TPU variables, a Google TPU on the PCI bus,
      `/dev/accel*` (TPU v2-v4, v5p) or a VFIO group `/dev/vfio/<n>` (v5e, v6e and later, which
      show no /dev/accel); GPU for an NVIDIA device or a working `nvidia-smi`; CPU otherwise.
    """
    for name in TPU_ENV_VARS:
        if environ.get(name):
            return Accelerator("tpu", f"{name}={environ[name]}")
    chips = [
        TPU_PCI_DEVICES[device]
        for vendor, device in pci_devices
        if vendor.lower() == GOOGLE_PCI_VENDOR and device.lower() in TPU_PCI_DEVICES
    ]
    if chips:
        return Accelerator("tpu", f"{len(chips)} TPU {chips[0]} chip(s) on the PCI bus")
    entries = sorted(set(dev_entries))
    accel = [e for e in entries if re.fullmatch(r"accel\d+", e)]
    if accel:
        return Accelerator("tpu", f"/dev/{accel[0]} ({len(accel)} TPU device(s))")
    cuda = parse_cuda_version(nvidia_smi_output)
    nvidia = [e for e in entries if e in ("nvidia0", "nvidiactl")]
    if nvidia_smi_output is not None or nvidia:
        shown = f"CUDA {cuda[0]}.{cuda[1]} driver" if cuda else "no CUDA version from nvidia-smi"
        source = "nvidia-smi" if nvidia_smi_output is not None else f"/dev/{nvidia[0]}"
        return Accelerator("gpu", f"NVIDIA GPU ({source}; {shown})", cuda)
    # /dev/vfio/vfio alone is the VFIO control file, present on many machines; a numbered group
    # is a device handed to this machine, which on TPU v5e/v6e runtimes is the TPU.
    groups = [e for e in entries if re.fullmatch(r"vfio/\d+", e)]
    if groups:
        return Accelerator("tpu", f"/dev/{groups[0]} ({len(groups)} VFIO group(s): TPU v5e/v6e)")
    return Accelerator("cpu", "no TPU or NVIDIA GPU found")


def plan_install(
    accelerator: Accelerator,
    installed: Mapping[str, str],
    tensorflow_found: bool = False,
) -> InstallPlan:
    """The project's extras for this runtime.

    Args:
      accelerator: from `detect_accelerator`.
      installed: installed distributions, name (any case, - or _) -> version.
      tensorflow_found: whether a `tensorflow` package is importable (found without importing
        it), e.g. one built from source that left no distribution metadata.

    Returns:
      "cpu" (tensorflow-cpu) only where no TensorFlow is installed; "tpu" on a TPU; on a GPU
      the CUDA plugin already installed if the driver supports it, else the newest one the
      driver supports ("cuda13" needs a driver for CUDA >= 13, "cuda12" for CUDA 12).
    """
    have = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in installed.items()}
    extras, notes = [], []
    tensorflows = [d for d in TENSORFLOW_DISTRIBUTIONS if d in have]
    if not tensorflows and not tensorflow_found:
        extras.append("cpu")
    elif len(tensorflows) > 1:
        notes.append(
            "Several TensorFlow distributions share one `tensorflow` package here "
            f"({', '.join(f'{d} {have[d]}' for d in tensorflows)}): if `import tensorflow` "
            f"fails, `pip uninstall` all but one."
        )
    if accelerator.kind == "tpu":
        extras.append("tpu")
    elif accelerator.kind == "gpu":
        extras.extend(_cuda_extra(accelerator.cuda, have, notes))
    return InstallPlan(tuple(extras), tuple(notes))


def _cuda_extra(cuda: tuple[int, int] | None, have: Mapping[str, str], notes: list) -> list[str]:
    """The CUDA extra (at most one) for a GPU whose driver supports `cuda`."""
    driver = cuda[0] if cuda else None
    plugins = [major for major, name in CUDA_PLUGINS.items() if name in have]
    usable = [major for major in plugins if driver is None or major <= driver]
    if len(plugins) > 1:
        notes.append(
            "Several JAX CUDA plugins are installed "
            f"({', '.join(CUDA_PLUGINS[m] for m in plugins)}): `pip uninstall` all but one."
        )
    if usable:  # Keep (and bring into range) the runtime's plugin: never add a second one.
        return [CUDA_EXTRAS[max(usable)]]
    if plugins:
        notes.append(
            f"{CUDA_PLUGINS[plugins[0]]} is installed but this driver supports CUDA "
            f"{cuda[0]}.{cuda[1]} only: uninstall it, or JAX will not use the GPU."
        )
        return []
    if driver is None:
        notes.append("nvidia-smi showed no CUDA version: installing the CUDA 12 JAX wheels.")
        return [CUDA_EXTRAS[12]]
    if driver < min(CUDA_EXTRAS):
        notes.append(
            f"This NVIDIA driver supports CUDA {cuda[0]}.{cuda[1]}; JAX's GPU wheels need CUDA "
            f">= {min(CUDA_EXTRAS)}: JAX will run on the CPU."
        )
        return []
    return [CUDA_EXTRAS[max(major for major in CUDA_EXTRAS if major <= driver)]]


def pip_install_command(python: str, repo: str, plan: InstallPlan) -> list[str]:
    """One `pip install` of the checkout with the plan's extras (one resolution of everything)."""
    target = f"{repo}[{','.join(plan.extras)}]" if plan.extras else str(repo)
    return [python, "-m", "pip", "install", "-q", "-e", target]


def imported_versions(modules: Mapping[str, object]) -> dict[str, str]:
    """Installed versions of the distributions whose modules are imported (`sys.modules`): the
    ones an install could change under a running session (Colab imports some at start)."""
    versions = {}
    for module, distribution in IMPORT_WATCH.items():
        if module in modules:
            try:
                versions[distribution] = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def changed_since(before: Mapping[str, str], version=importlib.metadata.version) -> list[str]:
    """The distributions of `before` whose installed version is another one now, as
    "name old -> new": their imported modules are stale until the session restarts."""
    importlib.invalidate_caches()
    changed = []
    for distribution, old in sorted(before.items()):
        try:
            new = version(distribution)
        except importlib.metadata.PackageNotFoundError:
            new = "(removed)"
        if new != old:
            changed.append(f"{distribution} {old} -> {new}")
    return changed


def needs_drive(paths: Iterable[str], in_colab: bool) -> bool:
    """Whether Google Drive must be mounted at /content/drive for these paths."""
    return in_colab and any(str(p).startswith("/content/drive") for p in paths)


def local_data_dir(data_dir: str, in_colab: bool) -> str:
    """`data_dir` for this runtime: outside Colab a Drive path falls back to TFDS's default
    folder ("" for `config.data_dir`, i.e. ~/tensorflow_datasets)."""
    if not in_colab and data_dir.startswith("/content/drive"):
        return ""
    return data_dir


def probe() -> tuple[Accelerator, InstallPlan]:
    """Reads this machine (/dev, the environment, the PCI bus, nvidia-smi, the installed
    distributions) and decides with `detect_accelerator` and `plan_install`."""
    dev_entries = []
    for path in glob.glob("/dev/*") + glob.glob("/dev/vfio/*"):
        dev_entries.append(os.path.relpath(path, "/dev"))
    pci = []
    for vendor_path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(vendor_path) as vendor, open(vendor_path[: -len("vendor")] + "device") as dev:
                pci.append((vendor.read().strip(), dev.read().strip()))
        except OSError:
            continue
    nvidia_smi = None
    if shutil.which("nvidia-smi"):
        result = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False)
        nvidia_smi = result.stdout if result.returncode == 0 else None
    accelerator = detect_accelerator(dev_entries, os.environ, pci, nvidia_smi)
    installed = {
        d.metadata["Name"]: d.version
        for d in importlib.metadata.distributions()
        if d.metadata["Name"]  # A damaged install can leave a distribution without a name.
    }
    tensorflow_found = importlib.util.find_spec("tensorflow") is not None
    return accelerator, plan_install(accelerator, installed, tensorflow_found)
