"""What the command-line tools share: quiet logging, one way to fail, huge pages for malloc."""

import os
import platform
import sys

from absl import flags, logging


def quiet_unless_verbose() -> None:
    """Logs warnings only, unless --verbosity was given (Orbax and clu log every step at INFO)."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def fail(error: Exception) -> None:
    """Prints `error: ...` to stderr and exits with status 2 (bad input, nothing written)."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


HUGEPAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def hugepages_environment(environ: dict, thp_setting: str, libc: tuple[str, str]) -> dict | None:
    """The environment to re-run a command with so that glibc's malloc uses huge pages, or None.

    XLA:CPU allocates each step's temporaries afresh (gigabytes for the full-width VGG), and
    the kernel faults them in 4 KiB page by page: ~10 GB and ~2.5 M page faults per step at
    batch 128 on our 2-core machines, a fifth of the CPU time spent in the kernel. With
    `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks for transparent huge
    pages, which cut the faults 70-fold and the step time by 18 % there (benchmarks/README.md).

    Args:
      environ: the current environment.
      thp_setting: the contents of `THP_SETTING` ("" when unreadable).
      libc: `platform.libc_ver()`, e.g. ("glibc", "2.36").

    Returns:
      A copy of `environ` with the tunable added, or None when it is there already, the user
      turned it off (`LTPA_HUGEPAGES=0`), the kernel never gives huge pages, or the C library
      is not a glibc that knows the tunable.
    """
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables or environ.get("LTPA_HUGEPAGES") == "0":
        return None
    if "[always]" not in thp_setting and "[madvise]" not in thp_setting:
        return None
    name, version = libc
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return None
    if name != "glibc" or (major, minor) < (2, 35):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGEPAGES_TUNABLE)))}


def hugepages_environment_here(environ: dict) -> dict | None:
    """`hugepages_environment` for this machine's kernel setting and C library."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(THP_SETTING) as f:
            thp = f.read()
    except OSError:
        thp = ""
    return hugepages_environment(environ, thp, platform.libc_ver())


def rerun_with_huge_pages() -> None:
    """Re-executes this command once with `hugepages_environment`, where that applies.

    Call first thing in a command's entry point, before anything is computed; a no-op on
    macOS, Windows, musl, kernels without transparent huge pages, and when already done.
    """
    environ = hugepages_environment_here(dict(os.environ))
    if environ is not None:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
