"""What the sampled softmax's log Q correction needs: how often each candidate is in the batch.

A training batch scores every query against a candidate set made of the batch's B positives
(each an independent draw from the label distribution p) and M extra negatives drawn with
replacement from a background distribution q. Popular videos are in that set far more often
than rare ones, so an uncorrected softmax learns to push them down. Yi et al. (2019) subtract
log Q_j from every logit of candidate j. Removing accidental hits masks only a row's own
positive: for every other row each copy of j in the set is one more term of the softmax's
denominator, so the quantity to correct for is the expected number of copies of j,

    Q_j = B p_j + M q_j,

the classic sampled-softmax correction (Bengio and Senecal; Jean et al.). For rare items it equals
the probability that j is in the set at all, 1 - (1 - p_j)^B (1 - q_j)^M, which saturates at 1
for a video in nearly every batch and would then under-correct it (it retrieves worse on
MovieLens: the ablations in docs/candidate_generation.md). With the streaming estimator
of Yi et al., B p_j is replaced by its estimate of P(j in a batch), as in the paper.

TFRS clips the probability it is given into [1e-6, 1], and B p_j passes 1 for any video in more
than one batch in B; so the model hands it Q_j / (B + M), the chance that one draw of the set is j.
Dividing every column by the same number shifts a row's logits equally, which a softmax ignores.

Drawing the M negatives must not cost what the corpus is large (`tf.random.categorical` over V
logits does): `NegativeSampler` draws from q by Walker's alias method, two gathers per draw from
tables of V + 1 entries built once, and Q's parts are gathered from variables, so no size-V
constant sits in the training step and no step reads a whole size-V tensor.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfrs_youtube.features.lookup import rows


def background_probabilities(label_counts: np.ndarray) -> np.ndarray:
    """p over the video table's indices (0 = unknown, never a label) from the training labels'
    counts per index, add-one smoothed: log Q stays finite for videos never seen as a label,
    which can still be sampled."""
    smoothed = np.asarray(label_counts, np.float64) + 1.0
    smoothed[0] = 0.0
    return (smoothed / max(smoothed.sum(), 1.0)).astype(np.float32)


def uniform_probabilities(vocabulary_size: int) -> np.ndarray:
    """q uniform over the known videos (index 0, out of vocabulary, is never sampled)."""
    q = np.full(vocabulary_size + 1, 1.0 / max(vocabulary_size, 1), np.float32)
    q[0] = 0.0
    return q


def alias_table(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of a distribution (Vose's construction, O(n)): `accept[i]` and
    `alias[i]` such that drawing a column i uniformly, then keeping i with probability
    `accept[i]` and taking `alias[i]` otherwise, draws i with probability `probabilities[i]`."""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 1 or not len(p) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError("alias_table needs a non-empty vector of finite, non-negative probabilities with a "
                         "positive sum")
    n = len(p)
    scaled = p * (n / p.sum())
    accept = np.ones(n, np.float64)
    alias = np.arange(n, dtype=np.int64)
    small = [int(i) for i in np.flatnonzero(scaled < 1.0)]
    large = [int(i) for i in np.flatnonzero(scaled >= 1.0)]
    while small and large:
        s, g = small.pop(), large[-1]
        accept[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        if scaled[g] < 1.0:
            small.append(large.pop())
    # What is left is 1 up to rounding: kept whole.
    return accept.astype(np.float32), alias


class NegativeSampler(tf.Module):
    """Draws sampled negatives from a distribution q over the video table's indices in time that
    does not grow with the corpus (Walker's alias method, the tables held in variables).

    Draws are seeded by the global seed (`tf.keras.utils.set_random_seed`).

    Args:
      probabilities: q over the table's indices (index 0, unknown, should have probability 0).
    """

    def __init__(self, probabilities: np.ndarray, name: str = "negative_sampler"):
        super().__init__(name=name)
        accept, alias = alias_table(probabilities)
        self.size = len(accept)
        self.accept = tf.Variable(accept, trainable=False, name="accept")
        self.alias = tf.Variable(alias, trainable=False, name="alias")

    def sample(self, num: int) -> tf.Tensor:
        """`num` draws (int64 indices) from q, with replacement."""
        column = tf.random.uniform([num], 0, self.size, dtype=tf.int64)
        coin = tf.random.uniform([num])
        return tf.where(coin < rows(self.accept, column), column, rows(self.alias, column))


def expected_in_batch(p: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
    """B p: expected copies among B positives of a candidate with per-example probability p."""
    return tf.cast(batch_size, tf.float32) * tf.cast(p, tf.float32)


def expected_count(in_positives: tf.Tensor, q: tf.Tensor | None, num_negatives: int) -> tf.Tensor:
    """Q = (expected copies among the positives) + M q: the correction's quantity, floored above 0
    (an item that can never be in the set would get an infinite correction)."""
    count = tf.cast(in_positives, tf.float32)
    if q is not None and num_negatives > 0:
        count += float(num_negatives) * tf.cast(q, tf.float32)
    return tf.maximum(count, 1e-12)


def per_draw_probability(count: tf.Tensor, batch_size: tf.Tensor, num_negatives: int) -> tf.Tensor:
    """Q / (B + M): the expected count as the probability of one draw, within TFRS's [1e-6, 1]."""
    return count / (tf.cast(batch_size, tf.float32) + float(num_negatives))
