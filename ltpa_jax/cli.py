"""The command-line layer every ltpa-* tool stands on.

A tool is a `main(argv)` over library functions, started with `cli.run(main, ...)`, which:

* re-executes the command with glibc's malloc on huge pages where that helps (below);
* keeps TensorFlow's C++ start-up lines and Orbax/clu's INFO logs out of the output, unless
  `--verbosity` is given;
* makes `--help` list the tool's own flags (absl lists the flags of the main module, which a
  console script's wrapper is not);
* turns a user's error (a bad flag or config value, a missing or damaged file, a workdir of
  another run) into one line `error: ...` on stderr and exit status 2, with no traceback
  (`LTPA_TRACEBACK=1` or `--verbosity=1` shows it for a bug report). Programming errors keep
  their traceback.

The flags that several tools share are defined here once, with one default each.
"""

import contextlib
import os
import platform
import re
import sys
import traceback
from collections.abc import Callable, Sequence

from absl import app, flags, logging

WORKDIR = flags.DEFINE_string(
    "workdir", None, "Workdir of a training run (config.json, checkpoints/)."
)
STEP = flags.DEFINE_integer(
    "step", None, "Checkpoint step to read (default: the latest intact one).", lower_bound=0
)
SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Dataset split to read.")
NUM_IMAGES = flags.DEFINE_integer("num_images", -1, "Images of the split to use (<= 0: all).")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Images per forward pass.", lower_bound=1)
OUT = flags.DEFINE_string("out", None, "Output folder (default: inside the workdir).")
# The maps ltpa-attend draws and ltpa-analyze localization scores (inference.METHODS).
METHOD = flags.DEFINE_enum(
    "method",
    "learned",
    ["learned", "gradcam", "cam"],
    "Attention maps: 'learned' (what the model attends to), 'gradcam' (Grad-CAM at --layers) "
    "or 'cam' (class activation map, plain ResNet).",
)
LAYERS = flags.DEFINE_list(
    "layers",
    None,
    "--method=gradcam: the layers (tap names or module paths; default: the VGG's att1-att3, "
    "the ResNet's stage-2 and stage-3 outputs).",
)

# The errors that are the user's: a bad value, a missing/damaged/unwritable file, divergence,
# a package the run needs and the environment lacks (the message names the install).
USER_ERRORS = (ValueError, OSError, FloatingPointError, ModuleNotFoundError)
TRACEBACK_ENV = "LTPA_TRACEBACK"


def _verbose() -> bool:
    return flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present


def quiet_unless_verbose() -> None:
    """Logs warnings only, unless --verbosity was given (Orbax and clu log every step at INFO)."""
    if not _verbose():
        logging.set_verbosity(logging.WARNING)


def fail(error: Exception | str) -> None:
    """Prints `error: ...` to stderr and exits with status 2 (bad input, nothing written)."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)


@contextlib.contextmanager
def _stderr_to_devnull():
    """Sends file descriptor 2 to /dev/null (C++ libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow_quietly(argv: Sequence[str]) -> None:
    """Imports TensorFlow with its C++ start-up lines (oneDNN, absl::InitializeLog) hidden.

    They are printed once per TF library at import; with `--verbosity` in argv they show.
    """
    if any(arg.startswith("--verbosity") or arg == "-v" for arg in argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_to_devnull():
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            pass  # The data layer says what to install when it needs TF.


TOOLS = ("ltpa-train", "ltpa-prepare", "ltpa-attend", "ltpa-analyze", "ltpa-compare")
TOOL_MODULES = ("main.py", "prepare.py", "attend.py", "analyze.py", "compare.py")


def _started_as_a_tool(argv0: str) -> bool:
    """True in `ltpa-attend ...` or `python -m ltpa_jax.attend ...` (not in tests, notebooks)."""
    name = os.path.basename(argv0)
    in_package = os.path.basename(os.path.dirname(os.path.abspath(argv0))) == "ltpa_jax"
    return name in TOOLS or (in_package and name in TOOL_MODULES)


# A tool imports this module before the data layer (which imports TensorFlow): quiet it now.
if _started_as_a_tool(sys.argv[0] if sys.argv else ""):
    import_tensorflow_quietly(sys.argv)


def _config_override_error(error: Exception, argv: Sequence[str]) -> str | None:
    """One line for a --config / --config.x=y problem, or None when it is not one."""
    path = next(
        (a.split("=", 1)[1] for a in argv if a.startswith("--config=")),
        None,
    )
    overrides = [a for a in argv if a.startswith("--config.")]
    if isinstance(error, AttributeError) and overrides:
        # ml_collections: "'num_tap'" or "'\\'num_tap\\'\\nDid you mean ...": the first word.
        first = re.search(r"\w+", str(error))
        name = first.group(0) if first else ""
        for override in overrides:
            field = override[len("--config.") :].split("=", 1)[0]
            if field.split(".")[-1] == name:
                from ltpa_jax import validation  # Local: it imports the models and data.

                return f"{override}: {validation.unknown_field_error(field)}"
    if path and (isinstance(error, OSError | SyntaxError | ImportError) or "config" in str(error)):
        text = str(error).splitlines()
        detail = next((line.strip() for line in reversed(text) if line.strip()), str(error))
        if path and not os.path.isfile(path.split(":", 1)[0]):
            return (
                f"--config={path}: no such config file. Experiment configs are in the "
                "repository's configs/ folder, e.g. --config=configs/demo.py."
            )
        return f"--config={path}: the config could not be loaded ({detail})."
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every error as one line and status 2."""
    try:
        remaining = flags.FLAGS(argv)
        if "config" in flags.FLAGS and flags.FLAGS["config"].present:
            # A file that failed to load gives a placeholder that raises on first use: use it
            # now, here, rather than inside main.
            flags.FLAGS.config.to_dict()
        return remaining
    except Exception as error:  # noqa: BLE001 - the config file is the user's code.
        message = _config_override_error(error, argv)
        if isinstance(error, flags.Error) and "--config." in str(error):
            message = re.sub(r"^flag ", "", str(error))
        if message is None and isinstance(error, flags.Error):
            message = re.sub(r"^flag ", "", str(error))
        if message is None:
            raise
        fail(message)
    return argv


def run(
    main: Callable[[list[str]], None],
    *,
    doc: str | None,
    key_flags: Sequence[str],
    required: Sequence[str] = ("workdir",),
) -> None:
    """Runs a tool: huge pages, quiet start-up, its flags in --help, user errors as one line.

    Args:
      main: the tool's `main(argv)`.
      doc: the tool's usage text (its module docstring), shown by --help.
      key_flags: the names of the flags the tool uses, listed by --help.
      required: flags that must be given.
    """
    rerun_with_huge_pages()
    import_tensorflow_quietly(sys.argv)
    main_module = sys.modules["__main__"]
    if doc:
        main_module.__doc__ = doc
    for name in key_flags:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
    flags.mark_flags_as_required(list(required))
    app.run(_guarded(main), flags_parser=_parse_flags)


def bucket_error(error: BaseException) -> str | None:
    """A TensorFlow file-system error about a gs:// path (no such bucket, no access, no network)
    as one line naming the fix; None for any other error.

    TensorFlow's GCS client (tf.io.gfile, which etils.epath and the TensorBoard writer use for
    gs://) raises its own errors, not OSError.
    """
    if type(error).__module__ != "tensorflow.python.framework.errors_impl":
        return None
    message = " ".join(re.sub(r"\{\{function_node [^}]*\}\}", "", str(error)).split())
    if "gs://" not in message:
        return None
    return (
        f"{message.rstrip('.')}. Check the bucket's name and your access to it: on Colab run "
        "`from google.colab import auth; auth.authenticate_user()`, elsewhere "
        "`gcloud auth application-default login`."
    )


def _guarded(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    def guarded(argv: list[str]) -> None:
        quiet_unless_verbose()
        try:
            main(argv)
        except Exception as error:
            message = error if isinstance(error, USER_ERRORS) else bucket_error(error)
            if message is None:
                raise
            if os.environ.get(TRACEBACK_ENV) == "1" or _verbose():
                traceback.print_exc()
            fail(message)

    return guarded


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
