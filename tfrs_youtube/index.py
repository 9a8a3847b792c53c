"""ScaNN's settings derived from the corpus, shared by serving and by offline evaluation, and the
served index's storage order."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


# The searcher's training and hashing, the same wherever a ScaNN index is built (served by TFRS's
# ScaNN layer, or offline by `evaluation.scann_searcher`): k-means iterations of the tree, and
# dimensions per asymmetric-hashing block (ScaNN's default, isotropic, quantisation).
TRAINING_ITERATIONS = 10
DIMENSIONS_PER_BLOCK = 2


def scann_settings(num_items: int, num_neighbors: int, num_leaves: int | None = None,
                   leaves_to_search: int | None = None, reorder: int | None = None) -> dict[str, int]:
    """About sqrt(N) leaves; a 50th of them searched (at least 8), and at least enough to hold 20
    times the neighbours asked for; the best `reorder` (at least 1,000, and 3x the neighbours) of
    the quantised search re-scored exactly. Each value can be overridden.

    Re-scoring is cheap and the quantised scores are what loses recall, so the search is narrow and
    the reordering wide (the measurements behind these defaults: docs/serving_latency.md).
    """
    leaves = num_leaves or max(2, int(round(math.sqrt(num_items))))
    to_search = leaves_to_search or min(leaves, max(8, math.ceil(leaves / 50),
                                                    math.ceil(leaves * 20 * num_neighbors / num_items)))
    return {"num_leaves": leaves, "leaves_to_search": to_search,
            "reordering_candidates": reorder or max(1000, 3 * num_neighbors)}


# The tensors of a serialised ScaNN searcher (`scann_ops.ScannState`) that hold one row per point;
# the rest (config, partitioner, codebook, per-dimension multipliers) do not depend on the order.
PER_POINT_TENSORS = ("dataset", "hashed_dataset", "datapoint_to_token", "int8_dataset", "dp_norms")


def store_in_leaf_order(layer) -> np.ndarray:
    """Renumbers the points of a freshly indexed TFRS ScaNN layer so that each leaf's points are
    contiguous, moving its identifiers with them; returns the order (new row -> old row).

    Why: after the quantised search ScaNN re-scores its best ~1,000 candidates exactly, reading
    their float rows, and the served graph then gathers the ids of the top N. In the order the
    corpus came in, those rows are scattered over the whole table (256 MB at 1M x 64), about one
    cache miss each; stored leaf by leaf, the candidates of a leaf are neighbours. The searcher
    answers the same: every point keeps its leaf, its code and its vector, only its row number
    changes. Call it before the layer's first search: a searcher created from these tensors keeps
    them. (It reads TFRS's private `_serialized_searcher` and `_identifiers`, as of TFRS 0.7.7.)
    """
    state, identifiers = layer._serialized_searcher, layer._identifiers
    if state is None or identifiers is None:
        raise ValueError("store_in_leaf_order needs a layer indexed with identifiers")
    tokens = state.datapoint_to_token.numpy()
    n = int(identifiers.shape[0])
    if tokens.shape != (n,):
        raise ValueError(f"expected one leaf per point ({n}), got datapoint_to_token of shape {tokens.shape}")
    order = np.argsort(tokens, kind="stable")
    for name in PER_POINT_TENSORS:
        variable = getattr(state, name)
        value = tf.convert_to_tensor(variable)  # (ScaNN's variables leave their static shape unset)
        if value.shape.rank and value.shape[0] == n:  # absent tensors are stored as scalars
            variable.assign(tf.gather(value, order))
    identifiers.assign(tf.gather(identifiers, order))
    return order
