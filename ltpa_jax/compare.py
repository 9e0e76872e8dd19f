"""ltpa-compare: every attention mechanism trained on cluttered digits with one budget, one table.

    ltpa-compare --out=/tmp/ltpa/compare      # all mechanisms (20 min on 2 loaded cores)
    ltpa-compare --out=/tmp/ltpa/compare --mechanisms=ltpa,se --steps=50

Each mechanism is a config file of the repository's `configs/` folder (`MECHANISMS`): LTPA's
learned attention, the plain VGG explained by Grad-CAM, squeeze-and-excitation, local
self-attention, AG-CNN and RAM. Every one is trained in `<out>/<mechanism>/` by the standard loop
(`train.train_and_evaluate`) with the same budget: `--steps` steps of `--train_batch_size` images,
one epoch of fresh cluttered digits (each config's schedule, warm-up and decay, runs in full),
the same seed and test images. Then, for each mechanism and each of its map methods
(`inference.attention_maps(method=...)`: the maps it learned, and Grad-CAM's where the
network has the layers), over the test split and over the **shifted** test split
(`cluttered_digits_shifted`: target sizes and clutter outside the training range), it scores
top-1 accuracy and, per map, the pointing game and the attention mass in the box
(`ltpa_jax.localization`). The train-step time is the mean of the run's own steps after
compilation (its last progress line), all runs in this one process on this machine.

The table is printed as Markdown and written to `<out>/comparison.md` (and `.json`; `--out`
defaults to /tmp/ltpa/compare). A rerun
resumes: finished runs are not trained again (their step time is read back from
`<out>/<mechanism>/compare.json`). A mechanism whose config file does not exist is shown as
missing; one that fails is shown with its error, and the others go on.
"""

import contextlib
import dataclasses
import functools
import io
import json
import os
import re
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from absl import app, flags

from ltpa_jax import cli, data, paths, rundir, train
from ltpa_jax.configs import load_module
from ltpa_jax.inference import predict_with_attention
from ltpa_jax.localization import finalize, localization_sums

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
"""The repository's configs/ folder."""
SHIFTED_DATASET = "cluttered_digits_shifted"
GRADCAM_LAYERS = ("att3",)
"""Where Grad-CAM explains the VGG-based networks in the table: the last tap layer (conv13,
8x8 at 32x32 input), the usual last-convolution choice at a resolution that can point."""


@dataclasses.dataclass(frozen=True)
class Mechanism:
    """One row group of the table.

    Attributes:
      config: the config file's name in `configs/`.
      methods: map methods scored (`inference.METHODS`), each with its Grad-CAM layers or None.
      description: what the mechanism is, for the table.
    """

    config: str
    methods: tuple[tuple[str, tuple[str, ...] | None], ...]
    description: str


MECHANISMS: dict[str, Mechanism] = {
    "ltpa": Mechanism(
        "digits_ltpa.py",
        (("learned", None), ("gradcam", GRADCAM_LAYERS)),
        "VGG-att3, learned soft attention (LTPA)",
    ),
    "gradcam": Mechanism(
        "digits_gradcam.py", (("gradcam", GRADCAM_LAYERS),), "plain VGG + post-hoc Grad-CAM"
    ),
    "se": Mechanism(
        "digits_se.py",
        (("gradcam", GRADCAM_LAYERS),),
        "VGG + squeeze-and-excitation (channel attention; maps by Grad-CAM)",
    ),
    "self_attention": Mechanism(
        "digits_self_attention.py",
        (("learned", None), ("gradcam", GRADCAM_LAYERS)),
        "VGG, stage 5 as 7x7 local self-attention",
    ),
    "agcnn": Mechanism("digits_agcnn.py", (("learned", None),), "AG-CNN, hard attention by crop"),
    "ram": Mechanism("digits_ram.py", (("learned", None),), "RAM, recurrent glimpses"),
}

_MECHANISMS = flags.DEFINE_list(
    "mechanisms", list(MECHANISMS), f"Mechanisms to compare, of {', '.join(MECHANISMS)}."
)
_STEPS = flags.DEFINE_integer(
    "steps",
    150,
    "Training steps of every mechanism (one epoch of steps x batch_size images).",
    lower_bound=1,
)
_TRAIN_BATCH = flags.DEFINE_integer("train_batch_size", 64, "Training batch size.", lower_bound=1)
_TEST_IMAGES = flags.DEFINE_integer(
    "test_images", 1000, "Images of the test and of the shifted test split.", lower_bound=1
)
_CONFIGS = flags.DEFINE_string("configs", CONFIGS_DIR, "Folder of the mechanisms' config files.")


def budget_config(config, *, steps: int, batch_size: int, test_images: int, eval_batch: int):
    """A mechanism's config with the comparison's budget: `steps` steps of `batch_size` fresh
    images (one epoch, so the config's own schedule runs whole), `test_images` test images,
    evaluation and checkpoint at the end only, no pictures."""
    c = config.copy_and_resolve_references()
    c.dataset = "cluttered_digits"
    c.num_digits_train = steps * batch_size
    c.shuffle_buffer = steps * batch_size
    c.num_digits_test = test_images
    c.batch_size = batch_size
    c.eval_batch_size = eval_batch
    c.num_epochs = 1
    c.num_train_steps = -1
    c.log_every_steps = max(1, steps // 5)
    c.eval_every_steps = steps
    c.checkpoint_every_steps = steps
    c.num_picture_images = 0
    return c


class _Tee(io.TextIOBase):
    """Writes to a stream and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.text = stream, io.StringIO()

    def write(self, s: str) -> int:
        self.text.write(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()


_RATE = re.compile(r"\[(\d+)/(\d+)\s+\d+%\].*?([\d.]+) steps/s")


def step_seconds(output: str, total_steps: int) -> float | None:
    """The mean train-step time of a run, from its last progress line ("... 1.73 steps/s"),
    which averages the steps after compilation; None when the run printed none."""
    rates = [float(m.group(3)) for m in _RATE.finditer(output) if int(m.group(2)) == total_steps]
    return 1.0 / rates[-1] if rates and rates[-1] > 0 else None


@functools.partial(jax.jit, static_argnums=0, static_argnames=("method", "layers"))
def _scores_batch(model, variables, images, labels, boxes, mask, *, method, layers):
    logits, maps = predict_with_attention(
        model, variables, images, upsample=True, method=method, layers=layers
    )
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) & mask)
    return correct, localization_sums(maps, boxes, mask) if maps else {}


def score(pipeline: data.Pipeline, model, variables, method: str, layers, batch_size: int) -> dict:
    """Accuracy and per-map pointing game and mass in box over a pipeline's test split."""
    correct, sums, count = 0, None, 0
    for batch in pipeline.eval_batches("test", batch_size=batch_size):
        c, s = _scores_batch(
            model,
            variables,
            jnp.asarray(batch["image"]),
            jnp.asarray(batch["label"]),
            jnp.asarray(batch["box"]),
            jnp.asarray(batch["mask"]),
            method=method,
            layers=layers,
        )
        correct += int(c)
        count += int(batch["mask"].sum())
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
    maps = finalize(sums) if sums else {}
    return {
        "accuracy": correct / max(count, 1),
        "maps": {name: {k: v[k] for k in ("pointing", "mass")} for name, v in maps.items()},
    }


def run_mechanism(
    name: str,
    mechanism: Mechanism,
    *,
    out: str,
    configs_dir: str,
    steps: int,
    batch_size: int,
    test_images: int,
) -> dict:
    """Trains (or resumes) one mechanism and scores it; returns its row group's numbers.

    Returns:
      {"status": "ok" | "missing" | "failed", "error", "parameters", "step_seconds",
       "methods": {method: {"test": score, "shifted": score}}}.
    """
    path = os.path.join(configs_dir, mechanism.config)
    if not os.path.isfile(path):
        return {"status": "missing", "error": f"no config file {path}"}
    workdir = os.path.join(out, name)
    record = os.path.join(workdir, "compare.json")
    devices = jax.device_count()
    eval_batch = max(devices, min(200, test_images) // devices * devices)
    config = budget_config(
        load_module(path).get_config(),
        steps=steps,
        batch_size=batch_size,
        test_images=test_images,
        eval_batch=eval_batch,
    )
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        train.train_and_evaluate(config, workdir)
    seconds = step_seconds(tee.text.getvalue(), steps)
    if seconds is None and os.path.isfile(record):  # Trained by an earlier call.
        with open(record) as f:
            seconds = json.load(f).get("step_seconds")
    run = rundir.open_run(workdir)
    shifted_config = config.copy_and_resolve_references()
    shifted_config.dataset = SHIFTED_DATASET
    pipelines = {
        "test": data.Pipeline.from_config(config),
        "shifted": data.Pipeline.from_config(shifted_config),
    }
    result = {
        "status": "ok",
        "parameters": int(sum(x.size for x in jax.tree.leaves(run.variables["params"]))),
        "step_seconds": seconds,
        "methods": {},
    }
    for method, layers in mechanism.methods:
        result["methods"][method] = {
            split: score(pipeline, run.model, run.variables, method, layers, eval_batch)
            for split, pipeline in pipelines.items()
        }
    paths.write_text(record, json.dumps(result, indent=1))
    return result


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown_table(results: dict[str, dict], budget: str) -> str:
    """The comparison as Markdown: one row per mechanism, map method and map."""
    lines = [
        f"Cluttered digits, 32x32, {budget}. Pointing game (PG) and attention mass in the box "
        "per map; 'shifted': targets of other sizes and denser clutter than in training.",
        "",
        "| mechanism | maps | parameters | train step (ms) | accuracy | PG | mass in box "
        "| shifted accuracy | shifted PG | shifted mass |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        if result["status"] != "ok":
            lines.append(f"| {name} | {result['status']}: {result['error']} |" + " |" * 8)
            continue
        first = True
        for method, splits in result["methods"].items():
            test, shifted = splits["test"], splits["shifted"]
            names = sorted(test["maps"], key=lambda n: (n == "combined", n)) or ["(none)"]
            for map_name in names:
                cells = [
                    name if first else "",
                    f"{method}: {map_name}",
                    f"{result['parameters']:,}" if first else "",
                    _number(
                        None if result["step_seconds"] is None else 1000 * result["step_seconds"],
                        ".0f",
                    )
                    if first
                    else "",
                    f"{test['accuracy']:.3f}" if first else "",
                    _number(test["maps"].get(map_name, {}).get("pointing"), ".3f"),
                    _number(test["maps"].get(map_name, {}).get("mass"), ".3f"),
                    f"{shifted['accuracy']:.3f}" if first else "",
                    _number(shifted["maps"].get(map_name, {}).get("pointing"), ".3f"),
                    _number(shifted["maps"].get(map_name, {}).get("mass"), ".3f"),
                ]
                lines.append("| " + " | ".join(cells) + " |")
                first = False
    return "\n".join(lines)


def compare(
    out: str,
    *,
    mechanisms: Sequence[str] = tuple(MECHANISMS),
    steps: int = 150,
    batch_size: int = 64,
    test_images: int = 1000,
    configs_dir: str = CONFIGS_DIR,
) -> tuple[str, dict[str, dict]]:
    """Trains and scores every mechanism with one budget; writes and returns the table.

    Args:
      out: folder of the runs (`<out>/<mechanism>/`) and of comparison.md/.json.
      mechanisms: names of `MECHANISMS`, in table order.
      steps, batch_size: the training budget of each (one epoch of steps x batch_size images).
      test_images: images of the test and of the shifted test split.
      configs_dir: the folder of the config files.

    Returns:
      (the Markdown table, the numbers per mechanism).

    Raises:
      ValueError: an unknown mechanism name.
    """
    unknown = [m for m in mechanisms if m not in MECHANISMS]
    if unknown:
        raise ValueError(f"--mechanisms: unknown {unknown}; use some of {list(MECHANISMS)}.")
    results = {}
    start = time.time()
    for name in mechanisms:
        print(f"=== {name}: {MECHANISMS[name].description}", flush=True)
        t = time.time()
        try:
            results[name] = run_mechanism(
                name,
                MECHANISMS[name],
                out=out,
                configs_dir=configs_dir,
                steps=steps,
                batch_size=batch_size,
                test_images=test_images,
            )
        except Exception as error:  # noqa: BLE001 - one mechanism's failure is a table cell.
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            results[name] = {"status": "failed", "error": first_line[:200]}
            print(f"{name} failed: {type(error).__name__}: {error}", flush=True)
        print(f"=== {name}: {time.time() - t:.0f} s", flush=True)
    budget = (
        f"{steps} steps of {batch_size} images each (one epoch), {test_images} test images; "
        f"{time.time() - start:.0f} s in all on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)"
    )
    table = markdown_table(results, budget)
    paths.write_text(os.path.join(out, "comparison.md"), table + "\n")
    paths.write_text(os.path.join(out, "comparison.json"), json.dumps(results, indent=1))
    return table, results


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    out = cli.OUT.value or "/tmp/ltpa/compare"
    table, _ = compare(
        out,
        mechanisms=_MECHANISMS.value,
        steps=_STEPS.value,
        batch_size=_TRAIN_BATCH.value,
        test_images=_TEST_IMAGES.value,
        configs_dir=_CONFIGS.value,
    )
    print("\n" + table)
    print(f"\nwrote {os.path.join(out, 'comparison.md')}")


def run() -> None:
    """Console-script entry point (`ltpa-compare`)."""
    cli.run(
        main,
        doc=__doc__,
        key_flags=("out", "mechanisms", "steps", "train_batch_size", "test_images", "configs"),
        required=(),
    )


if __name__ == "__main__":
    run()
