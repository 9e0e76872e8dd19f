"""What the command-line tools share: quiet logging and one way to fail on bad input."""

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
