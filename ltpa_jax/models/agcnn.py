"""AG-CNN: hard attention by cropping (Guan et al. 2018, "Diagnose like a radiologist").

Three branches, trained together by the standard loop:

* the **global branch**, a small VGG-style CNN on the whole image, whose last convolution
  stage gives a heat map: per position, the largest absolute activation over the channels,
  min-max scaled to [0, 1] per image;
* the **crop selection**, pure functions of arrays (jit-able, batched): threshold the heat map
  at `threshold`, keep the largest 8-connected region of the positions above it (connected
  components by iterated max-propagation of labels, `connected_components`), take its bounding
  box, and crop that box out of the input image, resized to a fixed `crop_size` (bilinear);
* the **local branch**, the same architecture with its own parameters, on the crop;
* the **fusion branch**, a linear classifier on the concatenated pooled features of both.

The crop is **not differentiated**: the heat map goes through `jax.lax.stop_gradient` before
the box is chosen (a box is a discrete choice; the paper trains the branches in stages and
passes no gradient through it either). The global branch learns from its own classifier and
through the fusion branch, the local branch from its own classifier on the crop and through the
fusion branch. `AGCNN.loss` (the training loss that `train.train_step` uses for this model) is
the mean of the three cross-entropies, the global, the local and the fusion one; the paper
trains the three with their own losses one after the other, we sum them in one loop.

Differences from the paper, kept on purpose: the branches are small VGG-style CNNs, not
ResNet-50 or DenseNet-121 (the datasets here are small); the heat map is thresholded at the
branch's resolution (input / 4), not upsampled to the input first, so a box is a multiple of 4
input pixels; classes are exclusive (softmax cross-entropy, not the paper's multi-label sigmoid).

The heat map is sown into the "attention" collection as "heatmap" [B, S/4, S/4] (so
`inference.attention_maps`, `ltpa-attend` and `ltpa-analyze localization` read it like an LTPA
tap's map), the crop boxes into "crops" as "boxes" [B, 4] (input pixels, ymin, xmin, ymax,
xmax, max exclusive) and the fusion feature into "descriptors" as "global".
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ltpa_jax.models.conv import ConvImpl
from ltpa_jax.models.heads import kernel_init
from ltpa_jax.models.vgg import ConvBNReLU, max_pool, scaled

# Output channels of the two convolutions of each stage (before the width multiplier); a 2x2
# max-pool follows every stage but the last, whose output is the heat map's feature map.
BRANCH_STAGES = ((64, 64), (128, 128), (256, 256))
STRIDE = 2 ** (len(BRANCH_STAGES) - 1)  # Input pixels per heat-map position.


# --------------------------------------------------------------------------------------------
# Crop selection: pure functions of arrays.


def heat_map(features: jax.Array) -> jax.Array:
    """The branch's heat map: max over channels of |features|, min-max scaled per image.

    Args:
      features: [B, H, W, C].

    Returns:
      [B, H, W] float32 in [0, 1]; all zeros for a constant map.
    """
    heat = jnp.max(jnp.abs(features.astype(jnp.float32)), axis=-1)
    low = jnp.min(heat, axis=(1, 2), keepdims=True)
    span = jnp.max(heat, axis=(1, 2), keepdims=True) - low
    return jnp.where(span > 0, (heat - low) / jnp.where(span > 0, span, 1.0), 0.0)


def _neighbourhood_max(labels: jax.Array) -> jax.Array:
    """Max of each position's 3x3 neighbourhood (itself included), [B, H, W] -> [B, H, W]."""
    h, w = labels.shape[1:]
    padded = jnp.pad(labels, ((0, 0), (1, 1), (1, 1)))
    shifted = [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    return jnp.max(jnp.stack(shifted), axis=0)


def connected_components(mask: jax.Array) -> jax.Array:
    """8-connected components of a binary map, labelled by iterated max-propagation.

    Each position of the mask starts with its own label (1 + its flat index); every iteration
    replaces each label by the largest label among its 8 neighbours and itself, inside the mask,
    until nothing changes. A component then carries the largest start label of its positions.

    Args:
      mask: bool [B, H, W].

    Returns:
      int32 [B, H, W]: 0 outside the mask, one positive label per component.
    """
    b, h, w = mask.shape
    start = jnp.arange(1, h * w + 1, dtype=jnp.int32).reshape(1, h, w)
    labels = jnp.where(mask, start, 0)

    def step(carry):
        labels, _ = carry
        new = jnp.where(mask, _neighbourhood_max(labels), 0)
        return new, jnp.any(new != labels)

    labels, _ = jax.lax.while_loop(lambda c: c[1], step, (labels, jnp.array(True)))
    return labels


def largest_region(mask: jax.Array) -> jax.Array:
    """The largest 8-connected region of each map (ties: the smaller label), bool [B, H, W]."""
    b, h, w = mask.shape
    labels = connected_components(mask)
    counts = jnp.zeros((b, h * w + 1), jnp.int32)
    counts = counts.at[jnp.arange(b)[:, None], labels.reshape(b, -1)].add(1)
    counts = counts.at[:, 0].set(0)  # The background.
    winner = jnp.argmax(counts, axis=1)
    return mask & (labels == winner[:, None, None])


def bounding_boxes(region: jax.Array) -> jax.Array:
    """Bounding box of each map's True positions, (ymin, xmin, ymax, xmax), max exclusive.

    Args:
      region: bool [B, H, W].

    Returns:
      int32 [B, 4] in map positions; the whole map (0, 0, H, W) where the region is empty.
    """
    h, w = region.shape[1:]
    rows, cols = jnp.any(region, axis=2), jnp.any(region, axis=1)
    ymin, ymax = jnp.argmax(rows, axis=1), h - jnp.argmax(rows[:, ::-1], axis=1)
    xmin, xmax = jnp.argmax(cols, axis=1), w - jnp.argmax(cols[:, ::-1], axis=1)
    boxes = jnp.stack([ymin, xmin, ymax, xmax], axis=1).astype(jnp.int32)
    full = jnp.array([0, 0, h, w], jnp.int32)
    return jnp.where(jnp.any(rows, axis=1)[:, None], boxes, full)


def select_boxes(heat: jax.Array, threshold: float) -> jax.Array:
    """The crop box of each heat map: threshold, largest connected region, its bounding box.

    Args:
      heat: [B, H, W] heat maps (any scale; `heat_map` gives [0, 1]).
      threshold: positions with heat strictly above it form the mask (the paper: 0.7).

    Returns:
      int32 [B, 4] (ymin, xmin, ymax, xmax) in map positions, max exclusive; the whole map
      where no position is above the threshold.
    """
    return bounding_boxes(largest_region(heat > threshold))


def crop_and_resize(images: jax.Array, boxes: jax.Array, size: int) -> jax.Array:
    """Crops each box out of its image and resizes it to size x size (bilinear).

    Output pixel (i, j) samples the image at pixel coordinates
    (ymin + (i + 0.5) * (ymax - ymin) / size - 0.5, same for x), i.e. pixel centres; a box of
    exactly size x size pixels is copied unchanged. Coordinates outside the image take the
    nearest edge pixel.

    Args:
      images: [B, H, W, C].
      boxes: [B, 4] (ymin, xmin, ymax, xmax) in input pixels, max exclusive (may be float).
      size: side of the output.

    Returns:
      [B, size, size, C], the dtype of `images`.
    """
    boxes = boxes.astype(jnp.float32)
    steps = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size

    def one(image, box):
        ys = box[0] + steps * (box[2] - box[0]) - 0.5
        xs = box[1] + steps * (box[3] - box[1]) - 0.5
        grid = jnp.meshgrid(ys, xs, indexing="ij")

        def channel(plane):
            return jax.scipy.ndimage.map_coordinates(plane, grid, order=1, mode="nearest")

        return jax.vmap(channel, in_axes=2, out_axes=2)(image.astype(jnp.float32))

    return jax.vmap(one)(images, boxes).astype(images.dtype)


def select_crop(
    images: jax.Array, heat: jax.Array, threshold: float, size: int
) -> tuple[jax.Array, jax.Array]:
    """AG-CNN's crop: the box of the heat map's largest region above `threshold`, resized.

    Not differentiated: `heat` is passed through `jax.lax.stop_gradient`.

    Args:
      images: [B, S, S, C] inputs.
      heat: [B, H, W] heat maps over the same field of view (S a multiple of H).
      threshold: heat threshold of the mask.
      size: side of the crops.

    Returns:
      (crops [B, size, size, C], boxes float32 [B, 4] in input pixels, max exclusive).
    """
    boxes = select_boxes(jax.lax.stop_gradient(heat), threshold)
    scale = jnp.array(
        [images.shape[1] / heat.shape[1], images.shape[2] / heat.shape[2]] * 2, jnp.float32
    )
    boxes = boxes.astype(jnp.float32) * scale
    return crop_and_resize(images, boxes, size), boxes


# --------------------------------------------------------------------------------------------
# The model.


class Branch(nn.Module):
    """A small VGG-style CNN: `BRANCH_STAGES` of conv-BN-ReLU pairs, 2x2 max-pools between.

    Returns the last stage's feature map [B, S/4, S/4, C] (the heat map's source).
    """

    width: float = 1.0
    conv_impl: ConvImpl = "auto"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """[B, S, S, 3] -> [B, S/4, S/4, C] (S a multiple of 4)."""
        x = x.astype(self.dtype)
        index = 0
        for stage, channels in enumerate(BRANCH_STAGES):
            if stage:
                x = max_pool(x)
            for c in channels:
                index += 1
                x = ConvBNReLU(
                    scaled(c, self.width), True, self.dtype, self.conv_impl, name=f"conv{index}"
                )(x, train)
        return x


class AGCNN(nn.Module):
    """Attention-guided CNN: global branch, heat-map crop, local branch, fusion branch.

    Attributes:
      num_classes: classifier outputs.
      width: channel multiplier of both branches (1.0: 64-128-256 channels).
      threshold: heat threshold of the crop mask, in [0, 1) (the paper: 0.7).
      crop_size: side of the resized crop the local branch sees, a multiple of 4; 0 = the
        input's side.
      conv_impl: convolution implementation (see models/conv.py).
      dtype: computation dtype (parameters float32).
    """

    num_classes: int
    width: float = 1.0
    threshold: float = 0.7
    crop_size: int = 0
    conv_impl: ConvImpl = "auto"
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.global_branch = Branch(self.width, self.conv_impl, self.dtype)
        self.local_branch = Branch(self.width, self.conv_impl, self.dtype)
        dense = dict(dtype=self.dtype, kernel_init=kernel_init)
        self.global_classifier = nn.Dense(self.num_classes, **dense)
        self.local_classifier = nn.Dense(self.num_classes, **dense)
        self.fusion_classifier = nn.Dense(self.num_classes, **dense)

    def branches(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Logits of the three branches ("global", "local", "fusion"), each [B, K] float32.

        Sows the heat map, the crop boxes and the fusion feature (see the module docstring).
        """
        features = self.global_branch(images, train)
        heat = heat_map(features)
        size = self.crop_size or images.shape[1]
        crops, boxes = select_crop(images, heat, self.threshold, size)
        self.sow("attention", "heatmap", heat)
        self.sow("crops", "boxes", boxes)
        pooled_global = jnp.mean(features, axis=(1, 2))
        pooled_local = jnp.mean(self.local_branch(crops, train), axis=(1, 2))
        fused = jnp.concatenate([pooled_global, pooled_local], axis=-1)
        self.sow("descriptors", "global", fused.astype(jnp.float32))
        return {
            "global": self.global_classifier(pooled_global).astype(jnp.float32),
            "local": self.local_classifier(pooled_local).astype(jnp.float32),
            "fusion": self.fusion_classifier(fused).astype(jnp.float32),
        }

    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """The fusion branch's logits [B, num_classes] float32 (images [B, S, S, 3])."""
        return self.branches(images, train)["fusion"]

    def loss(
        self, images: jax.Array, labels: jax.Array, *, train: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """The training loss: the mean of the three branches' cross-entropies.

        Args:
          images: [B, S, S, 3]; labels: int [B].
          train: batch norm in training mode.

        Returns:
          (per-example loss [B], fusion logits [B, num_classes]).
        """
        logits = self.branches(images, train)
        losses = [
            optax.softmax_cross_entropy_with_integer_labels(value, labels)
            for value in logits.values()
        ]
        return sum(losses) / len(losses), logits["fusion"]
