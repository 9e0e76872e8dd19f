"""Stand-alone local self-attention (Ramachandran et al. 2019), as pure functions and a module.

Each position (i, j) of a feature map attends to the k x k neighbourhood around it (its memory
block), with relative position embeddings:

    y_ij = sum_{(a, b) in N_k(i, j)} softmax_ab(q_ij . (k_ab + r_{a-i, b-j}) / sqrt(d)) v_ab

per head, where q = x W_Q, k = x W_K, v = x W_V (1x1 projections, no bias) are split depthwise
into `heads` groups of d = C / heads channels. The relative embedding is split as in the paper:
its first d/2 channels embed the row offset a - i, its last d/2 the column offset b - j,
``r_{a-i, b-j} = concat(r_row[a - i], r_col[b - j])``, each learned for the k offsets
-(k//2)..k//2 and for each head. The logits are scaled by 1/sqrt(d) as in the Transformer (the
paper's equation leaves it out; it keeps the softmax out of saturation at initialisation).
Neighbours outside the map are left out of the softmax (not zero-padded into it).

`LocalSelfAttention` holds W_Q, W_K, W_V (Dense layers "query", "key", "value") and the
embeddings ("relative_rows", "relative_columns" [k, heads, d/2]), optionally followed by batch
norm and ReLU (as the VGG's conv-BN-ReLU it replaces). It sows

* the per-position attention weights [B, H, W, heads, k*k] (neighbour n = (a - i + k//2) * k +
  (b - j + k//2)) into the "attention_weights" collection under "weights";
* a spatial map into "attention" under "map": the attention each position receives, summed
  over the queries that see it and averaged over the heads, divided by H * W so that it sums to
  1 (`received_attention`); a position that every neighbour attends to stands out. This is
  what `inference.attention_maps`, ltpa-attend and the localization scores read.

The backbones use it where ``config.model.self_attention_kernel`` (k) is > 0: in place of the
VGG's stage-5 convolutions (conv11-conv13 become ``self_attention11``-``self_attention13``, each
followed by its batch norm and ReLU) and of the 3x3 convolution of every ResNet stage-3
bottleneck (``stage3_blockN/self_attention``, followed by 2x2 average pooling where the block
has stride 2, as in the paper).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ATTENTION_WEIGHTS = "attention_weights"
"""The collection of the per-position weights [B, H, W, heads, k*k]."""


def neighbour_offsets(kernel: int) -> list[tuple[int, int]]:
    """The (row, column) offsets of the k x k neighbourhood, in the order of the weights' last
    axis: n = (di + k//2) * k + (dj + k//2)."""
    r = kernel // 2
    return [(di, dj) for di in range(-r, r + 1) for dj in range(-r, r + 1)]


DENSE_MAX_POSITIONS = 256
"""Maps of at most this many positions (16x16) are computed as masked attention over the whole
map (matrix products, fast on the CPU); larger ones window by window (memory linear in H * W)."""


def _inside(height: int, width: int, kernel: int) -> np.ndarray:
    """bool [H, W, k*k]: whether each neighbour of each position lies inside the map."""
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    return np.stack(
        [
            (0 <= rows + di) & (rows + di < height) & (0 <= cols + dj) & (cols + dj < width)
            for di, dj in neighbour_offsets(kernel)
        ],
        axis=-1,
    )


@functools.cache
def _neighbour_matrix(height: int, width: int, kernel: int) -> np.ndarray:
    """float32 [P, k*k, P] (P = H * W): 1 where key q is neighbour n of query p."""
    positions = height * width
    out = np.zeros((positions, kernel * kernel, positions), np.float32)  # Cached: read only.
    inside = _inside(height, width, kernel)
    for n, (di, dj) in enumerate(neighbour_offsets(kernel)):
        for i in range(height):
            for j in range(width):
                if inside[i, j, n]:
                    out[i * width + j, n, (i + di) * width + (j + dj)] = 1.0
    return out


def relative_embeddings(rows: jax.Array, columns: jax.Array) -> jax.Array:
    """r_{di, dj} = concat(rows[di], columns[dj]) for every neighbour: [k*k, heads, d].

    Args:
      rows, columns: [k, heads, d/2], indexed by offset + k//2.
    """
    kernel = rows.shape[0]
    r_rows = jnp.repeat(rows, kernel, axis=0)  # n // k
    r_cols = jnp.tile(columns, (kernel, 1, 1))  # n % k
    return jnp.concatenate([r_rows, r_cols], axis=-1)


def local_self_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, rows: jax.Array, columns: jax.Array, heads: int
) -> tuple[jax.Array, jax.Array]:
    """Multi-head local self-attention with relative positions, as a pure function.

    Two equal computations: maps of up to `DENSE_MAX_POSITIONS` positions as attention over
    the whole map masked to each neighbourhood (matrix products), larger ones neighbour by
    neighbour (shifted copies of the keys and values).

    Args:
      q, k, v: queries, keys and values [B, H, W, C], C = heads * d.
      rows, columns: relative embeddings of the row and column offsets [kernel, heads, d/2].
      heads: number of heads.

    Returns:
      (y [B, H, W, C], weights [B, H, W, heads, kernel**2] float32, each position's softmax over
      its neighbours, 0 for neighbours outside the map).
    """
    b, h, w, c = q.shape
    kernel = rows.shape[0]
    d = c // heads
    rel = relative_embeddings(rows, columns).astype(q.dtype)  # [k*k, heads, d]
    if h * w <= DENSE_MAX_POSITIONS:
        neighbour = jnp.asarray(_neighbour_matrix(h, w, kernel), q.dtype)  # [P, n, P]
        inside = neighbour.sum(axis=1) > 0  # [P, P]
        qh, kh, vh = (x.reshape(b, h * w, heads, d) for x in (q, k, v))
        content = jnp.einsum("bphd,bqhd->bhpq", qh, kh)
        relative = jnp.einsum("bhpn,pnq->bhpq", jnp.einsum("bphd,nhd->bhpn", qh, rel), neighbour)
        logits = (content + relative).astype(jnp.float32) / np.sqrt(d)
        full = jax.nn.softmax(jnp.where(inside, logits, -jnp.inf), axis=-1)  # [B, heads, P, P]
        y = jnp.einsum("bhpq,bqhd->bphd", full.astype(v.dtype), vh)
        weights = jnp.einsum("bhpq,pnq->bphn", full, neighbour.astype(jnp.float32))
        return y.reshape(b, h, w, c), weights.reshape(b, h, w, heads, kernel * kernel)
    r = kernel // 2
    offsets = neighbour_offsets(kernel)
    pad = ((0, 0), (r, r), (r, r), (0, 0))
    kp = jnp.pad(k, pad).reshape(b, h + 2 * r, w + 2 * r, heads, d)
    vp = jnp.pad(v, pad).reshape(b, h + 2 * r, w + 2 * r, heads, d)
    qh = q.reshape(b, h, w, heads, d)

    def window(x: jax.Array, di: int, dj: int) -> jax.Array:
        return x[:, r + di : r + di + h, r + dj : r + dj + w]

    content = jnp.stack([jnp.sum(qh * window(kp, di, dj), -1) for di, dj in offsets], axis=-1)
    logits = (content + jnp.einsum("bijhd,nhd->bijhn", qh, rel)).astype(jnp.float32) / np.sqrt(d)
    inside = _inside(h, w, kernel)[None, :, :, None, :]
    weights = jax.nn.softmax(jnp.where(inside, logits, -jnp.inf), axis=-1)
    wv = weights.astype(v.dtype)
    y = sum(wv[..., n, None] * window(vp, di, dj) for n, (di, dj) in enumerate(offsets))
    return y.reshape(b, h, w, c), weights


def received_attention(weights: jax.Array) -> jax.Array:
    """The attention each position receives: [B, H, W, heads, k*k] -> [B, H, W] summing to 1.

    Position (a, b) gets the weight of every query (i, j) whose neighbour it is, averaged over
    the heads; divided by H * W (every query gives out 1), so the map sums to 1.
    """
    b, h, w, _, n = weights.shape
    kernel = int(round(np.sqrt(n)))
    r = kernel // 2
    given = jnp.mean(weights.astype(jnp.float32), axis=3)  # [B, H, W, k*k]
    canvas = jnp.zeros((b, h + 2 * r, w + 2 * r), jnp.float32)
    for index, (di, dj) in enumerate(neighbour_offsets(kernel)):
        canvas = canvas.at[:, r + di : r + di + h, r + dj : r + dj + w].add(given[..., index])
    return canvas[:, r : r + h, r : r + w] / (h * w)


class LocalSelfAttention(nn.Module):
    """Local self-attention layer, [B, H, W, C_in] -> [B, H, W, features] (see the module).

    Attributes:
      features: output channels C (a multiple of 2 * heads).
      kernel: spatial extent k of the neighbourhood (odd; 7 in the paper's best models).
      heads: attention heads (8 in the paper).
      batch_norm: batch norm after the attention.
      relu: ReLU at the end (with `batch_norm`: the VGG's conv-BN-ReLU layout).
      dtype: computation dtype.
    """

    features: int
    kernel: int = 7
    heads: int = 8
    batch_norm: bool = False
    relu: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        d = self.features // self.heads
        dense = dict(use_bias=False, dtype=self.dtype, kernel_init=nn.initializers.lecun_normal())
        q = nn.Dense(self.features, name="query", **dense)(x)
        k = nn.Dense(self.features, name="key", **dense)(x)
        v = nn.Dense(self.features, name="value", **dense)(x)
        init = nn.initializers.normal(stddev=1.0)
        shape = (self.kernel, self.heads, d // 2)
        rows = self.param("relative_rows", init, shape, jnp.float32)
        columns = self.param("relative_columns", init, shape, jnp.float32)
        y, weights = local_self_attention(q, k, v, rows, columns, self.heads)
        self.sow(ATTENTION_WEIGHTS, "weights", weights)
        self.sow("attention", "map", received_attention(weights))
        if self.batch_norm:
            y = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
            )(y)
        return nn.relu(y) if self.relu else y
