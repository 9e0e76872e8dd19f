"""What a fresh Colab (or any) runtime needs installed, decided from what it already has.

The notebooks in `colab/` load this file by its path before the package is installed, so it
imports nothing outside the standard library. Pure functions decide; `probe` reads the machine:

    accelerator = detect_accelerator(dev_entries, os.environ, pci_devices, nvidia_smi_output)
    plan = plan_install(accelerator, installed_distributions, tensorflow_found)
    notes = install(sys.executable, repo, plan, installed_distributions())

The install never adds a second TensorFlow (Colab's GPU runtimes ship `tensorflow`, its TPU
runtimes none: the extra `[cpu]` brings `tensorflow-cpu` only where no TensorFlow is installed)
and never a second JAX CUDA plugin; every requirement is a range, so pip keeps what the runtime
has where it fits and otherwise upgrades it to the range that the tests pass with. It also
keeps the runtime's own requirements: pip resolves only what it installs, so an upgrade (NumPy
for JAX) could break a package it does not look at (Colab's numba needs numpy<2.3); `install`
passes every requirement of the runtime's other packages, and "no downgrade", to pip as
constraints, and leaves out only the ones that conflict with the project's, saying which.
"""

import dataclasses
import glob
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping

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
    paths: Iterable[str] = (),
) -> InstallPlan:
    """The project's extras for this runtime.

    Args:
      accelerator: from `detect_accelerator`.
      installed: installed distributions, name (any case, - or _) -> version.
      tensorflow_found: whether a `tensorflow` package is importable (found without importing
        it), e.g. one built from source that left no distribution metadata.
      paths: the run's folders (workdir, data_dir): a gs:// one needs google-cloud-storage.

    Returns:
      "cpu" (tensorflow-cpu) only where no TensorFlow is installed; "tpu" on a TPU; on a GPU
      the CUDA plugin already installed if the driver supports it, else the newest one the
      driver supports ("cuda13" needs a driver for CUDA >= 13, "cuda12" for CUDA 12); "gcs"
      for a gs:// path where google-cloud-storage is missing.
    """
    have = {canonical_name(name): version for name, version in installed.items()}
    extras, notes = [], []
    if uses_buckets(paths) and "google-cloud-storage" not in have:
        extras.append("gcs")
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


def pip_install_command(
    python: str,
    repo: str,
    plan: InstallPlan,
    constraints: str | None = None,
    report: str | None = None,
    quiet: bool = True,
) -> list[str]:
    """One `pip install` of the checkout with the plan's extras (one resolution of everything).

    `constraints`: a pip constraints file to respect; `report`: make it a dry run that writes
    pip's installation report (JSON) there; `quiet=False` keeps pip's account of a conflict.
    """
    target = f"{repo}[{','.join(plan.extras)}]" if plan.extras else str(repo)
    options = ["-q"] if quiet else []
    if constraints:
        options += ["-c", constraints]
    if report:
        options += ["--dry-run", "--report", report]
    return [python, "-m", "pip", "install", *options, "-e", target]


def canonical_name(name: str) -> str:
    """A distribution name as pip compares them: lower case, runs of -_. as one "-"."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_by(report: Mapping) -> set[str]:
    """The distributions that a pip installation report (`--report`) installs or replaces."""
    return {canonical_name(item["metadata"]["name"]) for item in report.get("install", [])}


@dataclasses.dataclass(frozen=True)
class Installed:
    """One installed distribution: its version and its requirement strings (`Requires-Dist`)."""

    version: str
    requires: tuple[str, ...] = ()


def runtime_constraints(runtime: Mapping[str, Installed], replaced: Iterable[str]) -> list[str]:
    """The runtime's own requirements, and no downgrades, as lines of a pip constraints file.

    Args:
      runtime: installed distribution name -> `Installed`.
      replaced: the distributions the install replaces: their old requirements do not count.

    Returns:
      Every requirement of every other distribution, without extras (a constraints file takes
      none), leaving out those that only an extra asks for and direct URLs; and "name>=version"
      for every installed distribution (no downgrade; local labels such as "+cu128" dropped).
      Sorted, unique.
    """
    replaced = {canonical_name(name) for name in replaced}
    lines = set()
    for distribution, installed in runtime.items():
        public = (installed.version or "").split("+")[0]  # Without a local label ("+cu128").
        if re.fullmatch(r"[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?", public):
            lines.add(f"{distribution}>={public}")
        if canonical_name(distribution) in replaced:
            continue
        for requirement in installed.requires:
            text, _, marker = requirement.partition(";")
            if re.search(r"\bextra\b", marker) or "@" in text:
                continue
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?(.*)", text)
            if not match:
                continue
            specifier = match.group(3).strip().strip("()")  # Old metadata: "numpy (>=1.2)".
            if not specifier and not marker.strip():
                continue  # "any version": constrains nothing.
            line = f"{match.group(1)}{specifier}"
            lines.add(f"{line}; {marker.strip()}" if marker.strip() else line)
    return sorted(lines)


def installed_distributions() -> dict[str, Installed]:
    """This environment's distributions: name -> `Installed`."""
    return {
        d.metadata["Name"]: Installed(d.version, tuple(d.requires or ()))
        for d in importlib.metadata.distributions()
        if d.metadata["Name"]
    }


def constraint_name(line: str) -> str:
    """The canonical name of the package that a constraints line constrains."""
    return canonical_name(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line).group(1))


def _upper_bound(line: str) -> tuple[int, ...] | None:
    """The lowest release that a line's <, <=, == or ~= clauses name (trailing zeros dropped)."""
    found = re.findall(r"(?:<=?|==|~=)\s*([0-9]+(?:\.[0-9]+)*)", line.partition(";")[0])
    return min(
        (_trim(tuple(int(part) for part in bound.split("."))) for bound in found), default=None
    )


def _trim(release: tuple[int, ...]) -> tuple[int, ...]:
    """A release without trailing zeros: (6, 0, 0) -> (6,), so that 6.0.0 and 6.0 compare equal."""
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    return release


def relax(constraints: Iterable[str], blamed: Iterable[str]) -> tuple[list[str], list[str]]:
    """The constraints less the tightest ones on each package that pip blamed for a conflict.

    For each blamed package, its lines with the lowest upper bound (<, <=, == or ~=) go; where
    none has an upper bound, all its lines go (a lower bound or "no downgrade" is what
    conflicts then). Returns (kept lines, dropped lines).
    """
    constraints, blamed = list(constraints), {canonical_name(name) for name in blamed}
    dropped = []
    for name in blamed:
        lines = [line for line in constraints if constraint_name(line) == name]
        bounded = {line: _upper_bound(line) for line in lines if _upper_bound(line) is not None}
        if bounded:
            lowest = min(bounded.values())
            dropped += [line for line, bound in bounded.items() if bound == lowest]
        else:
            dropped += lines
    return [line for line in constraints if line not in dropped], sorted(set(dropped))


def conflicting_constraints(pip_output: str) -> set[str]:
    """The packages whose constraints pip's "ResolutionImpossible" account blames."""
    blamed = re.findall(
        r"The user requested \(constraint\) ([A-Za-z0-9][A-Za-z0-9._-]*)", pip_output
    )
    return {canonical_name(name) for name in blamed}


def install(
    python: str,
    repo: str,
    plan: InstallPlan,
    runtime: Mapping[str, Installed],
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    max_attempts: int = 8,
) -> list[str]:
    """Installs the checkout with the plan's extras, keeping the runtime's own requirements.

    A dry run finds what the install replaces; the requirements of every other installed
    distribution, and "no downgrade" of any, go to pip as constraints. Where they leave no
    version that the project's own requirements accept (Colab's grpcio-status wants
    protobuf<6, TFDS's metadata needs >= 6.31.1), pip's account of the conflict names the
    package; its tightest constraints are dropped (`relax`) and pip runs again, and pip's
    closing message lists what then no longer fits.

    Args:
      python, repo, plan: as for `pip_install_command`.
      runtime: the runtime's distributions (`installed_distributions()`).
      run: `subprocess.run`, or a stand-in for the tests.
      max_attempts: constrained pip runs before installing without constraints.

    Returns:
      Notes for the user (empty when the runtime's requirements were all kept).
    """
    with tempfile.TemporaryDirectory() as folder:
        report_path = os.path.join(folder, "report.json")
        run(pip_install_command(python, repo, plan, report=report_path), check=True)
        with open(report_path) as report:
            replaced = installed_by(json.load(report))
        kept = runtime_constraints(runtime, replaced)
        constraints_path = os.path.join(folder, "runtime-constraints.txt")
        dropped: list[str] = []
        for _ in range(max_attempts):
            with open(constraints_path, "w") as f:
                f.write("\n".join(kept) + "\n")
            command = pip_install_command(python, repo, plan, constraints_path, quiet=False)
            print(" ".join(command), flush=True)
            result = run(command, capture_output=True, text=True)
            blamed = conflicting_constraints(f"{result.stdout or ''}\n{result.stderr or ''}")
            if result.returncode == 0 or not blamed:
                break
            kept, newly_dropped = relax(kept, blamed)
            if not newly_dropped:
                break  # Nothing left to relax: the plain install below.
            dropped += newly_dropped
    # pip's last word (stdout) and its warnings and errors (stderr): on success, the packages
    # of the runtime that no longer fit; on failure, the account of the conflict.
    print("\n".join([*(result.stdout or "").strip().splitlines()[-1:], result.stderr or ""]))
    notes = []
    if dropped:
        notes.append(
            "These requirements of the runtime's packages conflict with this project's and were "
            f"left out: {'; '.join(dropped)}. pip's message above names the packages that no "
            "longer fit."
        )
    if result.returncode:
        notes.append(
            "pip could not install with the runtime's requirements as constraints: installed "
            "without them."
        )
        run(pip_install_command(python, repo, plan), check=True)
    for note in notes:
        print(f"note: {note}", flush=True)
    return notes


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


def uses_buckets(paths: Iterable[str]) -> bool:
    """Whether any of these paths is in a Google Cloud Storage bucket (gs://)."""
    return any(str(p).startswith("gs://") for p in paths)


def needs_drive(paths: Iterable[str], in_colab: bool) -> bool:
    """Whether Google Drive must be mounted at /content/drive for these paths."""
    return in_colab and any(str(p).startswith("/content/drive") for p in paths)


def local_data_dir(data_dir: str, in_colab: bool) -> str:
    """`data_dir` for this runtime: outside Colab a Drive path falls back to TFDS's default
    folder ("" for `config.data_dir`, i.e. ~/tensorflow_datasets)."""
    if not in_colab and data_dir.startswith("/content/drive"):
        return ""
    return data_dir


def probe(paths: Iterable[str] = ()) -> tuple[Accelerator, InstallPlan]:
    """Reads this machine (/dev, the environment, the PCI bus, nvidia-smi, the installed
    distributions) and decides with `detect_accelerator` and `plan_install` (`paths`: the
    run's folders, as there)."""
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
    return accelerator, plan_install(accelerator, installed, tensorflow_found, paths)
