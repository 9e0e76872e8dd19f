"""TensorFlow, which the input pipeline needs but pyproject.toml does not require.

`tensorflow-cpu` is not a hard dependency: Colab's GPU runtimes ship `tensorflow`, and a second
distribution of the same `tensorflow/` package beside it breaks TensorFlow's shared libraries.
Any one TensorFlow serves (tf.data runs on the host); the extra `[cpu]` installs
`tensorflow-cpu` where none is installed. `import ltpa_jax` runs `require_tensorflow()`, which
looks for the package without importing it (no start-up cost, no TensorFlow log lines).
"""

import importlib.util
import sys

TESTED_TENSORFLOW = "2.21"  # The version of the extra [cpu], which CI tests with.

MISSING_TENSORFLOW = (
    "ltpa_jax needs TensorFlow (tf.data for the input pipeline, TensorBoard summaries), and no "
    "`tensorflow` package is installed in {python}. Where none is (a CPU machine, a TPU VM, "
    "Colab's TPU runtime), install the project with the extra [cpu]: "
    'pip install -e ".[cpu]" (tensorflow-cpu {tested}). Where one is installed (Colab\'s GPU '
    "runtime ships `tensorflow`), use it and do not add tensorflow-cpu beside it: two "
    "distributions of the one `tensorflow` package break each other."
)


def tensorflow_installed() -> bool:
    """Whether a `tensorflow` package can be imported, found without importing it."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None  # None: imports of it are blocked.
    return importlib.util.find_spec("tensorflow") is not None


def require_tensorflow() -> None:
    """Raises an ImportError that says how to install TensorFlow where none is installed."""
    if not tensorflow_installed():
        raise ImportError(
            MISSING_TENSORFLOW.format(python=sys.executable, tested=TESTED_TENSORFLOW)
        )


require_tensorflow()
