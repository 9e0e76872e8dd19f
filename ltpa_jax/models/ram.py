"""RAM: the recurrent attention model (Mnih, Heess, Graves, Kavukcuoglu 2014).

The network looks at an image through a sequence of `num_glimpses` glimpses:

* the **glimpse sensor** (`glimpse`, a pure function) extracts a retina of `num_scales`
  square patches centred on a location l in [-1, 1]^2 ((-1, -1) the top-left corner, (1, 1)
  the bottom-right one): sides `glimpse_size`, 2 x, 4 x ..., each average-pooled down to
  `glimpse_size` x `glimpse_size` (zeros outside the image);
* the **glimpse network** embeds the retina and the location: g = ReLU(W_g ReLU(W_r retina) +
  W_l ReLU(W_m l));
* the **core** LSTM updates its state h_t from g_t;
* the **location network** emits the mean of the next location, tanh(W h_t); in training the
  next location is sampled from a Gaussian policy N(mean, `location_std`^2) (clipped to
  [-1, 1]), in evaluation it is the mean (no sampling);
* the **baseline network** predicts the reward from h_t (a learned baseline);
* the **classifier** reads the last state h_T.

The first glimpse is at the centre. Training (`RAM.loss`, which `train.train_step` uses for
this model) minimises the hybrid loss of the paper: the classifier's cross-entropy, plus
REINFORCE for the location network with the reward R = 1 when the prediction is right
(`reinforce_loss`: -sum_t log pi(l_t) (R - b_t), the advantage not differentiated), plus the
baseline's squared error sum_t (R - b_t)^2, these two divided by the number of location
decisions T - 1 (summed, training at learning rate 0.1 was unstable: configs/digits_ram.py).
The locations are sampled from the "sample" rng stream; the location and baseline networks
read h_t through `stop_gradient`, so the core and glimpse networks learn from the
classification loss alone (as in most implementations).

Sown: each glimpse's location as a Gaussian blob (sigma = half the foveal patch) over the
image, "glimpse1" ... "glimpseT" [B, S, S] in the "attention" collection (so
`inference.attention_maps`, `ltpa-attend` and `ltpa-analyze localization` read them; their
"combined" map is the whole path); the locations [B, T, 2] in [-1, 1] (y, x) under
"locations" in the "glimpses" collection (`RAM.glimpse_locations` reads them, and
`visualize.attention_grid(paths=...)` draws them); h_T under "global" in "descriptors".
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltpa_jax.models.heads import kernel_init

# --------------------------------------------------------------------------------------------
# Pure functions: the glimpse sensor, the Gaussian policy, REINFORCE.


def to_pixels(locations: jax.Array, size: int) -> jax.Array:
    """Locations in [-1, 1] -> pixel coordinates of the same point on a size x size image.

    -1 is the image's top (left) edge, 1 its bottom (right) edge: pixel = (l + 1) / 2 * size.
    """
    return (locations + 1.0) * (size / 2.0)


def patch_sizes(glimpse_size: int, num_scales: int) -> tuple[int, ...]:
    """Sides of the retina's patches: glimpse_size, 2 x, 4 x, ... (num_scales of them)."""
    return tuple(glimpse_size * 2**k for k in range(num_scales))


def glimpse(
    images: jax.Array, locations: jax.Array, glimpse_size: int, num_scales: int
) -> jax.Array:
    """The retina: `num_scales` patches centred on each location, each pooled to glimpse_size.

    Patch k has side s_k = glimpse_size * 2**k; its top-left pixel is
    floor(to_pixels(l) - s_k / 2 + 0.5) (the patch centred on the location, rounded to whole
    pixels); pixels outside the image are zeros. Each patch is average-pooled in
    2**k x 2**k blocks down to glimpse_size x glimpse_size.

    Args:
      images: [B, H, W, C].
      locations: [B, 2] (y, x) in [-1, 1].
      glimpse_size: side of the foveal patch and of every pooled patch.
      num_scales: number of patches.

    Returns:
      [B, num_scales, glimpse_size, glimpse_size, C], the dtype of `images`.
    """
    b, h, w, c = images.shape
    largest = glimpse_size * 2 ** (num_scales - 1)
    pad = largest  # Enough for any patch around any location in [-1, 1].
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    centre = jnp.stack(
        [to_pixels(locations[:, 0], h), to_pixels(locations[:, 1], w)], axis=1
    ).astype(jnp.float32)
    patches = []
    for side in patch_sizes(glimpse_size, num_scales):
        start = jnp.floor(centre - side / 2 + 0.5).astype(jnp.int32) + pad
        start = jnp.clip(start, 0, jnp.array([h + 2 * pad - side, w + 2 * pad - side]))

        def cut(image, corner, side=side):
            return jax.lax.dynamic_slice(image, (corner[0], corner[1], 0), (side, side, c))

        patch = jax.vmap(cut)(padded, start)
        k = side // glimpse_size
        patch = patch.reshape(b, glimpse_size, k, glimpse_size, k, c).mean(axis=(2, 4))
        patches.append(patch)
    return jnp.stack(patches, axis=1)


def gaussian_log_prob(sample: jax.Array, mean: jax.Array, std: float) -> jax.Array:
    """Log-density of an isotropic Gaussian policy, summed over the last axis, [..., D] -> [...]."""
    z = (sample - mean) / std
    return jnp.sum(-0.5 * z**2 - math.log(std) - 0.5 * math.log(2 * math.pi), axis=-1)


def reinforce_loss(log_probs: jax.Array, baselines: jax.Array, rewards: jax.Array) -> jax.Array:
    """REINFORCE with a baseline, as a loss to minimise: -sum_t log pi_t * (R - b_t).

    Its gradient is the score-function estimate of -grad E[R]; the advantage R - b_t is not
    differentiated (the baseline learns from `baseline_loss`).

    Args:
      log_probs: [B, T] log-probabilities of the actions taken.
      baselines: [B, T] predicted rewards.
      rewards: [B] rewards of the episodes.

    Returns:
      [B] per-episode losses.
    """
    advantage = jax.lax.stop_gradient(rewards[:, None] - baselines)
    return -jnp.sum(log_probs * advantage, axis=-1)


def baseline_loss(baselines: jax.Array, rewards: jax.Array) -> jax.Array:
    """Squared error of the baseline, sum_t (R - b_t)^2, [B, T], [B] -> [B]."""
    return jnp.sum((jax.lax.stop_gradient(rewards)[:, None] - baselines) ** 2, axis=-1)


def location_maps(locations: jax.Array, size: int, sigma: float) -> jax.Array:
    """A Gaussian blob (peak 1) at each location on a size x size grid of pixel centres.

    Args:
      locations: [B, T, 2] (y, x) in [-1, 1].
      size: side of the maps.
      sigma: the blob's standard deviation, in pixels.

    Returns:
      [B, T, size, size] float32 in (0, 1].
    """
    centre = to_pixels(locations.astype(jnp.float32), size)
    grid = jnp.arange(size, dtype=jnp.float32) + 0.5
    dy = (grid[None, None, :] - centre[..., 0:1]) ** 2  # [B, T, size]
    dx = (grid[None, None, :] - centre[..., 1:2]) ** 2
    return jnp.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * sigma**2))


# --------------------------------------------------------------------------------------------
# The model.


class RAM(nn.Module):
    """The recurrent attention model (see the module docstring).

    Attributes:
      num_classes: classifier outputs.
      num_glimpses: glimpses T per image.
      glimpse_size: side of the foveal patch and of every pooled patch, in pixels.
      num_scales: patches of the retina (sides glimpse_size * 1, 2, 4, ...).
      hidden_size: width of the core LSTM and of the glimpse embedding g (the retina and
        location embeddings have half of it each, as the paper's 128 + 128 -> 256).
      location_std: standard deviation of the Gaussian location policy, in [-1, 1] units.
      dtype: computation dtype (parameters float32; the policy is float32).
    """

    num_classes: int
    num_glimpses: int = 6
    glimpse_size: int = 8
    num_scales: int = 3
    hidden_size: int = 256
    location_std: float = 0.1
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=kernel_init)
        half = max(1, self.hidden_size // 2)
        self.retina_embedding = dense(half)
        self.location_embedding = dense(half)
        self.glimpse_from_retina = dense(self.hidden_size)
        self.glimpse_from_location = dense(self.hidden_size)
        self.core = nn.OptimizedLSTMCell(self.hidden_size, dtype=self.dtype)
        self.location_network = nn.Dense(2, kernel_init=kernel_init)
        self.baseline_network = nn.Dense(1, kernel_init=kernel_init)
        self.classifier = dense(self.num_classes)

    def _glimpse_feature(self, images: jax.Array, location: jax.Array) -> jax.Array:
        retina = glimpse(images, location, self.glimpse_size, self.num_scales)
        retina = retina.reshape(retina.shape[0], -1).astype(self.dtype)
        what = nn.relu(self.retina_embedding(retina))
        where = nn.relu(self.location_embedding(location.astype(self.dtype)))
        return nn.relu(self.glimpse_from_retina(what) + self.glimpse_from_location(where))

    def episode(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Runs the T glimpses.

        Args:
          images: [B, S, S, C].
          train: sample the locations from the policy ("sample" rng) instead of its mean.

        Returns:
          {"logits": [B, K] float32, "locations": [B, T, 2] (glimpse centres, the first at
          (0, 0)), "log_probs": [B, T - 1] (of locations 2..T under the policy; in eval, at
          its mean), "baselines": [B, T - 1]}.
        """
        b = images.shape[0]
        location = jnp.zeros((b, 2), jnp.float32)
        carry = self.core.initialize_carry(jax.random.key(0), (b, self.hidden_size))
        locations, log_probs, baselines = [location], [], []
        for t in range(self.num_glimpses):
            carry, h = self.core(carry, self._glimpse_feature(images, location))
            if t == self.num_glimpses - 1:
                break
            state = jax.lax.stop_gradient(h).astype(jnp.float32)
            mean = jnp.tanh(self.location_network(state))
            baselines.append(self.baseline_network(state)[:, 0])
            if train:
                noise = jax.random.normal(self.make_rng("sample"), mean.shape, jnp.float32)
                location = jax.lax.stop_gradient(
                    jnp.clip(mean + self.location_std * noise, -1.0, 1.0)
                )
            else:
                location = mean
            log_probs.append(gaussian_log_prob(location, mean, self.location_std))
            locations.append(location)
        logits = self.classifier(h).astype(jnp.float32)
        stacked = jnp.stack(locations, axis=1)
        self.sow("glimpses", "locations", stacked)
        size = images.shape[1]
        blobs = location_maps(stacked, size, self.glimpse_size / 2)
        for t in range(self.num_glimpses):
            self.sow("attention", f"glimpse{t + 1}", blobs[:, t])
        self.sow("descriptors", "global", h.astype(jnp.float32))
        empty = jnp.zeros((b, 0), jnp.float32)
        return {
            "logits": logits,
            "locations": stacked,
            "log_probs": jnp.stack(log_probs, axis=1) if log_probs else empty,
            "baselines": jnp.stack(baselines, axis=1) if baselines else empty,
        }

    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """Logits [B, num_classes] float32 of images [B, S, S, 3] (train: sampled locations)."""
        return self.episode(images, train)["logits"]

    def loss(
        self, images: jax.Array, labels: jax.Array, *, train: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """The hybrid loss: cross-entropy + (REINFORCE + the baseline's squared error) / (T - 1).

        Args:
          images: [B, S, S, 3]; labels: int [B].
          train: sample the locations (needs the "sample" rng).

        Returns:
          (per-example loss [B], logits [B, num_classes]).
        """
        out = self.episode(images, train)
        logits = out["logits"]
        rewards = jax.lax.stop_gradient((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        # Averaged over the T - 1 location decisions: summed, the train loss reached ~1e7
        # within 40 steps at the loop's learning rate 0.1 (configs/digits_ram.py).
        decisions = max(1, self.num_glimpses - 1)
        policy = reinforce_loss(out["log_probs"], out["baselines"], rewards)
        policy += baseline_loss(out["baselines"], rewards)
        cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return cross_entropy + policy / decisions, logits

    @nn.nowrap
    def glimpse_locations(self, variables: dict, images: jax.Array) -> np.ndarray:
        """The eval-mode glimpse path of each image, in pixels: float32 [B, T, 2] (y, x).

        Args:
          variables: {"params": ...} (other collections are ignored).
          images: [B, S, S, 3] normalised as in training.
        """
        locations = _eval_locations(self, {"params": variables["params"]}, images)
        return np.asarray(to_pixels(locations, images.shape[1]))


@functools.partial(jax.jit, static_argnums=0)
def _eval_locations(model: RAM, variables: dict, images: jax.Array) -> jax.Array:
    _, state = model.apply(variables, images, train=False, mutable=["glimpses"])
    return state["glimpses"]["locations"][0]
