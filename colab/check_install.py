"""What the notebooks' install would change on a Colab runtime, and what it would break there.

Colab publishes each runtime's packages (`pip freeze`) in github.com/googlecolab/backend-info:
`pip-freeze.gpu.txt` (GPU runtimes), `pip-freeze.tpu.txt` (TPU runtimes), `pip-freeze.txt`.
This script rebuilds the part of such a runtime that the install touches and runs the install
the notebooks run, without a Colab machine (PyPI access needed, no GPU or TPU):

1. reads every pinned package's metadata from PyPI (`pip install --dry-run --report`; packages
   without a wheel for this Python are listed as skipped);
2. makes a fresh venv holding, at the runtime's versions, every runtime package that the
   project's own resolution names, plus TensorFlow's, installed without their dependencies;
3. runs the notebooks' install there (`colab_setup.plan_install` for the extras, then
   `colab_setup.install`, which passes the runtime's requirements to pip as constraints) with
   every pip run made a dry run, and lists what it would install, upgrade or downgrade;
4. checks every requirement of every runtime package against the versions after the install,
   as `pip check` would on the runtime, and lists what breaks; and checks for a second
   TensorFlow or a second JAX CUDA plugin.

Run it with the runtime's Python (Colab: 3.13), from the repository root:

    git clone --depth 1 https://github.com/googlecolab/backend-info /tmp/backend-info
    python3.13 colab/check_install.py /tmp/backend-info/pip-freeze.gpu.txt --accelerator gpu
    python3.13 colab/check_install.py /tmp/backend-info/pip-freeze.tpu.txt --accelerator tpu
    python3.13 colab/check_install.py /tmp/backend-info/pip-freeze.txt --accelerator cpu

It needs `packaging` in the Python that runs it. Exit status 1 if the install would break a
runtime package, downgrade one or add a second TensorFlow or CUDA plugin.
"""

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def _colab_setup():
    """`ltpa_jax/colab_setup.py`, loaded by its path as the notebooks load it."""
    spec = importlib.util.spec_from_file_location("colab_setup", ROOT / "ltpa_jax/colab_setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_freeze(path: Path) -> dict[str, str]:
    """The `name==version` lines of a `pip freeze` file, by canonical name (URL lines left out)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def pip(python: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m pip args` with pip's output captured."""
    command = [python, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode:
        sys.exit(f"error: {' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def report(python: str, args: list[str], workdir: Path, name: str) -> list[dict]:
    """pip's installation report of a dry run: one dict per package it would install."""
    out = workdir / f"{name}.json"
    pip(python, "install", "--dry-run", "--quiet", "--report", str(out), *args)
    return json.loads(out.read_text())["install"]


def runtime_metadata(python: str, pins: dict[str, str], workdir: Path) -> tuple[dict, list]:
    """Each pinned package's metadata, from dry runs of the freeze (50 at a time) without deps.

    A package without a wheel for this Python is left out (its metadata would need a build)
    and returned in the second list; so is one whose pinned version is gone from PyPI. Local
    version labels are dropped (`torch==2.11.0+cu128` is read as PyPI's `torch==2.11.0`). The
    result is kept in `workdir/runtime.json` and reused.
    """
    cache = workdir / "runtime.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached["pins"] == pins:
            return cached["metadata"], cached["skipped"]
    names, metadata, skipped = sorted(pins), {}, []
    for start in range(0, len(names), 50):
        todo = {n: pins[n].split("+")[0] for n in names[start : start + 50]}
        while todo:
            requirements = workdir / "chunk.txt"
            requirements.write_text("".join(f"{n}=={v}\n" for n, v in sorted(todo.items())))
            out = workdir / "chunk.json"
            result = pip(
                python,
                "install",
                "--dry-run",
                "--quiet",
                "--ignore-installed",
                "--no-deps",
                "--only-binary=:all:",
                "--report",
                str(out),
                "-r",
                str(requirements),
                check=False,
            )
            if result.returncode == 0:
                for item in json.loads(out.read_text())["install"]:
                    metadata[canonicalize_name(item["metadata"]["name"])] = item["metadata"]
                break
            missing = re.search(
                r"(?:No matching distribution found for|satisfies the requirement|"
                r"Cannot install) ([A-Za-z0-9._-]+)==",
                result.stdout + result.stderr,
            )
            if not missing:
                sys.exit(f"error: reading the runtime's metadata failed:\n{result.stderr[-3000:]}")
            name = canonicalize_name(missing.group(1))
            skipped.append(f"{name}=={pins[name]}")
            del todo[name]
            print(f"  no wheel for {skipped[-1]}: left out", flush=True)
    cache.write_text(json.dumps({"pins": pins, "metadata": metadata, "skipped": skipped}))
    return metadata, skipped


def requirements_of(metadata: dict, environment: dict) -> list[Requirement]:
    """A package's unconditional requirements (no extras) whose markers hold here."""
    requirements = []
    for text in metadata.get("requires_dist") or []:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": ""}):
            continue
        requirements.append(requirement)
    return requirements


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("freeze", type=Path, help="a runtime's pip-freeze file")
    parser.add_argument("--accelerator", choices=["gpu", "tpu", "cpu"], required=True)
    parser.add_argument(
        "--cuda", default="12.4", help="the driver's CUDA version for --accelerator=gpu"
    )
    parser.add_argument("--workdir", type=Path, help="keep the venv and reports here")
    args = parser.parse_args()
    pins = read_freeze(args.freeze)
    if not pins:
        sys.exit(f"error: {args.freeze} holds no name==version lines: is it a pip freeze?")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="colab_check_"))
    workdir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    print(
        f"{args.freeze}: {len(pins)} pinned packages; Python {sys.version.split()[0]}; "
        f"work in {workdir}",
        flush=True,
    )

    print("1. the runtime's metadata from PyPI", flush=True)
    metadata, skipped = runtime_metadata(python, pins, workdir)
    from packaging.markers import default_environment

    environment = default_environment()

    print("2. a venv with the runtime's versions of what the install touches", flush=True)
    setup = _colab_setup()
    cuda = tuple(int(x) for x in args.cuda.split(".")[:2]) if args.accelerator == "gpu" else None
    accelerator = setup.Accelerator(args.accelerator, "check_install.py", cuda)
    plan = setup.plan_install(accelerator, pins)
    target = setup.pip_install_command(python, str(ROOT), plan)[-1]  # The checkout[extras].
    ours = report(python, ["--ignore-installed", target], workdir, "fresh")
    touched = {canonicalize_name(i["metadata"]["name"]) for i in ours}
    for name in list(touched) + ["tensorflow"]:  # The runtime's TensorFlow and what it needs.
        if name in metadata:
            needed = requirements_of(metadata[name], environment)
            touched |= {canonicalize_name(r.name) for r in needed}
    subset = {n: pins[n] for n in touched if n in pins and n in metadata}
    for name in (*setup.TENSORFLOW_DISTRIBUTIONS, *setup.CUDA_PLUGINS.values()):
        name = canonicalize_name(name)
        if name in pins and name in metadata:
            subset[name] = pins[name]
    venv = workdir / "venv"
    venv_python = str(venv / "bin" / "python")
    if not venv.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip(venv_python, "install", "--quiet", "--upgrade", "pip")
        listing = workdir / "subset.txt"
        # PyPI's build of a version with a local label ("torch==2.11.0+cu128").
        listing.write_text("".join(f"{n}=={v.split('+')[0]}\n" for n, v in sorted(subset.items())))
        pip(venv_python, "install", "--quiet", "--no-deps", "-r", str(listing))
    print(f"   {len(subset)} runtime packages installed at the runtime's versions", flush=True)

    print(
        f"3. the notebooks' install (colab_setup.install): extras {list(plan.extras)}", flush=True
    )
    for note in plan.notes:
        print(f"   note: {note}")
    runtime = {
        name: setup.Installed(version, tuple((metadata.get(name) or {}).get("requires_dist") or ()))
        for name, version in pins.items()
    }
    final = workdir / "install.json"

    def dry_run(command, **kwargs):
        """The notebooks' pip runs, each made a dry run that reports what it would install."""
        if "--dry-run" not in command:
            at = command.index("install") + 1
            command = [*command[:at], "--dry-run", "--report", str(final), *command[at:]]
        return subprocess.run(command, **kwargs)

    setup.install(venv_python, str(ROOT), plan, runtime, run=dry_run)
    planned = json.loads(final.read_text())["install"]
    after = dict(pins)
    changes, downgrades = [], []
    for item in planned:
        name = canonicalize_name(item["metadata"]["name"])
        new = item["metadata"]["version"]
        if name == "ltpa-jax":
            continue
        old = pins.get(name)
        after[name] = new
        if old is None:
            changes.append(f"   + {name} {new}")
        elif Version(new) < Version(old):
            downgrades.append(f"{name} {old} -> {new}")
            changes.append(f"   DOWNGRADE {name} {old} -> {new}")
        elif new != old:
            changes.append(f"   ^ {name} {old} -> {new}")
    print("\n".join(sorted(changes)) or "   nothing to install")

    print("4. the runtime's requirements after the install", flush=True)
    broken = []
    for name, meta in sorted(metadata.items()):
        if name in after and after[name] != pins.get(name):
            continue  # Replaced by the install, whose own resolution is consistent.
        for requirement in requirements_of(meta, environment):
            dependency = canonicalize_name(requirement.name)
            if dependency not in after or after[dependency] == pins.get(dependency):
                continue  # Unchanged by the install: as consistent as the runtime was.
            if not requirement.specifier.contains(after[dependency], prereleases=True):
                broken.append(
                    f"{name} {pins[name]} requires {requirement}, the install brings "
                    f"{dependency} {after[dependency]}"
                )
    tensorflows = [d for d in setup.TENSORFLOW_DISTRIBUTIONS if canonicalize_name(d) in after]
    plugins = [p for p in setup.CUDA_PLUGINS.values() if canonicalize_name(p) in after]
    duplicates = []
    if len(tensorflows) > 1:
        duplicates.append(f"two TensorFlow distributions: {', '.join(tensorflows)}")
    if len(plugins) > 1:
        duplicates.append(f"two JAX CUDA plugins: {', '.join(plugins)}")
    for line in broken + duplicates:
        print(f"   BROKEN {line}")
    if not broken and not duplicates:
        print("   nothing broken")
    if skipped:
        print(
            f"   (not checked, no wheel for Python {sys.version_info[0]}.{sys.version_info[1]}: "
            f"{', '.join(skipped)})"
        )
    print(
        f"summary: {len(changes)} changes, {len(downgrades)} downgrades, {len(broken)} broken "
        f"requirements, {len(duplicates)} duplicates"
    )
    return 1 if broken or downgrades or duplicates else 0


if __name__ == "__main__":
    sys.exit(main())
