"""Offline evaluation of both stages.

Retrieval is scored the way it is served: each held-out target is ranked against the full
corpus, with the videos the user already watched excluded (they would be filtered at serving).
With one target per user, HR@K equals Recall@K. Ranking is scored on held-out impressions by
AUC and by the paper's weighted per-user loss (the share of watch time the ranking mispredicts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrs_youtube.index import DIMENSIONS_PER_BLOCK, TRAINING_ITERATIONS, scann_settings

DEFAULT_KS = (10, 50, 100)


def _exclusion_pairs(exclude: list[np.ndarray] | None, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(row within the chunk, column) of every excluded item of queries start..stop."""
    if exclude is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lists = [np.asarray(e, np.int64) for e in exclude[start:stop]]
    rows = np.repeat(np.arange(len(lists)), [len(e) for e in lists])
    columns = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    keep = columns >= 0
    return rows[keep], columns[keep]


def target_ranks(scores_fn, num_queries: int, targets: np.ndarray, exclude: list[np.ndarray] | None = None,
                 chunk: int = 1024) -> np.ndarray:
    """0-based rank of each target among all items (np.inf when the target is not in the corpus).

    Args:
      scores_fn: (start, stop) -> [stop-start, num_items] scores of queries start..stop.
      targets: each query's target, as its column of the scores (-1: not in the corpus).
      exclude: per query, the columns to drop from the ranking (e.g. the history).
    """
    targets = np.asarray(targets, np.int64)
    ranks = np.full(num_queries, np.inf)
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        scores = np.array(scores_fn(start, stop), dtype=np.float32, copy=True)
        rows = np.arange(stop - start)
        tcol = targets[start:stop]
        valid = tcol >= 0
        target_score = np.where(valid, scores[rows, np.maximum(tcol, 0)], np.inf)
        r, c = _exclusion_pairs(exclude, start, stop)
        keep = c != tcol[r]  # a re-watched target stays rankable
        scores[r[keep], c[keep]] = -np.inf
        # Ties count against the target, so a constant scorer cannot look good.
        better = (scores >= target_score[:, None]).sum(axis=1) - 1
        ranks[start:stop] = np.where(valid, better, np.inf)
    return ranks


def metrics_from_ranks(ranks: np.ndarray, ks=DEFAULT_KS) -> dict[str, float]:
    """HR@K, NDCG@K and MAP@K for single-target queries, from 0-based ranks."""
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0).mean())
        out[f"MAP@{k}"] = float(np.where(hit, 1.0 / (np.minimum(ranks, k) + 1.0), 0.0).mean())
    return out


def scann_searcher(item_vectors: np.ndarray, num_neighbors: int, **overrides):
    """A ScaNN dot-product searcher over the items, built as the served index is (TFRS's ScaNN
    layer with `index.scann_settings`: tree, asymmetric hashing, exact reordering)."""
    from scann import scann_ops_pybind

    n = len(item_vectors)
    builder = scann_ops_pybind.builder(np.asarray(item_vectors, np.float32), num_neighbors, "dot_product")
    if n < 256:
        # Too few points to train partitions or quantisation codebooks on; exact scoring is cheap.
        return builder.score_brute_force().build()
    settings = scann_settings(n, num_neighbors, **overrides)
    builder = builder.tree(num_leaves=settings["num_leaves"], num_leaves_to_search=settings["leaves_to_search"],
                           training_iterations=TRAINING_ITERATIONS)
    builder = builder.score_ah(DIMENSIONS_PER_BLOCK)
    return builder.reorder(settings["reordering_candidates"]).build()


def evaluate_retrieval(user_vectors: np.ndarray, item_vectors: np.ndarray, targets: np.ndarray,
                       exclude: list[np.ndarray] | None = None, ks=DEFAULT_KS, index="exact") -> dict[str, float]:
    """Full-corpus dot-product retrieval metrics: HR@K (= Recall@K with one target), NDCG@K, MAP@K.

    `targets` and `exclude` are rows of `item_vectors`. index: "exact" scores every item;
    "scann" ranks what a ScaNN searcher (`scann_searcher`) returns, as served, items it does not
    return counting as misses; or a searcher already built (ScaNN's tree is trained from a
    random start, so two builds can differ slightly).
    """
    users = np.asarray(user_vectors, np.float32)
    num_items = len(item_vectors)
    if isinstance(index, str) and index == "exact":
        items = tf.constant(item_vectors, tf.float32)

        def scores(start, stop):
            return tf.linalg.matmul(users[start:stop], items, transpose_b=True).numpy()
    elif (isinstance(index, str) and index == "scann") or hasattr(index, "search_batched"):
        # Enough neighbours that the top max(ks) survive the exclusion of the longest history.
        longest = 0 if exclude is None else max((len(e) for e in exclude), default=0)
        depth = min(num_items, max(ks) + longest)
        searcher = index if hasattr(index, "search_batched") else scann_searcher(item_vectors, depth)
        neighbours, distances = searcher.search_batched(users, final_num_neighbors=depth)

        def scores(start, stop):
            # Items ScaNN did not return score -inf: they can never be ranked above a hit.
            out = np.full((stop - start, num_items), -np.inf, np.float32)
            rows = np.arange(stop - start)[:, None]
            out[rows, neighbours[start:stop]] = distances[start:stop]
            return out
    else:
        raise ValueError(f"index must be 'exact' or 'scann', got {index!r}")
    return metrics_from_ranks(target_ranks(scores, len(users), targets, exclude), ks)


def evaluate_popularity(label_counts: np.ndarray, targets: np.ndarray, exclude: list[np.ndarray] | None = None,
                        ks=DEFAULT_KS) -> dict[str, float]:
    """The most-popular baseline: every user gets the items most often watched in training
    (`label_counts`: per item, its training labels)."""
    popularity = np.asarray(label_counts, np.float32)
    # A tiny deterministic tie-break so equal counts do not all tie with the target.
    popularity = popularity + np.linspace(0, 1e-3, len(popularity), dtype=np.float32)[::-1]
    return metrics_from_ranks(
        target_ranks(lambda a, b: np.broadcast_to(popularity, (b - a, len(popularity))), len(targets), targets,
                     exclude), ks)


def evaluate_random(num_items: int, targets: np.ndarray, exclude: list[np.ndarray] | None = None,
                    ks=DEFAULT_KS, seed: int = 0) -> dict[str, float]:
    """Chance: uniformly random scores."""
    rng = np.random.default_rng(seed)
    return metrics_from_ranks(
        target_ranks(lambda a, b: rng.random((b - a, num_items), dtype=np.float32), len(targets), targets, exclude),
        ks)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half)."""
    labels = np.asarray(labels) > 0
    ranks = pd.Series(np.asarray(scores, np.float64)).rank(method="average").to_numpy()
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def weighted_per_user_loss(pages: np.ndarray, clicked: np.ndarray, watch_time_s: np.ndarray,
                           scores: np.ndarray) -> float:
    """The paper's ranking metric: mispredicted watch time over total watch time.

    Within each page (one user's impressions at one request), every pair of a clicked and an
    unclicked impression where the unclicked one scores higher counts the clicked one's watch
    time as mispredicted (once per such pair, as the paper defines it per pair).
    """
    frame = pd.DataFrame({"page": pages, "clicked": np.asarray(clicked) > 0,
                          "watch": np.asarray(watch_time_s, np.float64), "score": scores})
    mispredicted = total = 0.0
    for _, page in frame.groupby("page", sort=False):
        pos, neg = page[page.clicked], page[~page.clicked]
        if len(pos) == 0 or len(neg) == 0:
            continue
        # Pairs (clicked i, unclicked j) with score_j > score_i.
        worse = (neg.score.to_numpy()[None, :] > pos.score.to_numpy()[:, None]).sum(axis=1)
        mispredicted += float((pos.watch.to_numpy() * worse).sum())
        total += float(pos.watch.to_numpy().sum() * len(neg))
    return mispredicted / total if total > 0 else float("nan")


def observed_watch_time(clicked: np.ndarray, watch_time_s: np.ndarray) -> np.ndarray:
    """Each impression's watch time, 0 where it was not clicked: what exp(logit) estimates."""
    return np.where(np.asarray(clicked) > 0, np.asarray(watch_time_s, np.float64), 0.0)


def mean_standard_error(values: np.ndarray, clusters: np.ndarray | None = None) -> float:
    """Standard error of the mean of `values`; with `clusters`, cluster-robust (CR1).

    Impressions of one video are not independent draws: a hit video's impressions all lean the
    same way, and with heavy-tailed popularity a few videos carry a fifth of a decile's watch
    time. Clustered by video, the error counts each video's summed deviation once, so it says how
    far the mean would move over another draw of videos, not only of impressions.
    """
    values = np.asarray(values, np.float64)
    n = len(values)
    if n < 2:
        return 0.0
    if clusters is None:
        return float(values.std(ddof=1) / np.sqrt(n))
    _, cluster = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(cluster.ravel(), weights=values - values.mean())
    g = len(sums)
    if g < 2:
        return float("nan")  # one cluster: its mean says nothing about another draw
    return float(np.sqrt(g / (g - 1) * np.sum(sums**2)) / n)


def _calibration_row(predicted_s: np.ndarray, observed_s: np.ndarray, members: np.ndarray,
                     clusters: np.ndarray | None) -> dict:
    """Mean predicted and observed watch time of the impressions `members`, their count, clicks,
    and the observed mean's standard error (clustered when `clusters` is given)."""
    observed = observed_s[members]
    return {"predicted_s": float(predicted_s[members].mean()), "observed_s": float(observed.mean()),
            "impressions": int(len(observed)), "clicks": int((observed > 0).sum()),
            "observed_se_s": mean_standard_error(observed, None if clusters is None else clusters[members])}


def calibration_deciles(predicted_s: np.ndarray, observed_s: np.ndarray, bins: int = 10,
                        unknown: np.ndarray | None = None, clusters: np.ndarray | None = None) -> list[dict]:
    """Mean predicted against mean observed watch time per decile (bin) of the prediction.

    `observed_s` is each impression's watch time (0 when not clicked): a calibrated ranker's
    exp(logit) matches it on average within every bin. Bins hold equal numbers of impressions
    (ties in the prediction are split by position). Each bin also reports its clicks and the
    standard error of its observed mean (`observed_se_s`): with few clicks in the lowest bins
    the observed mean itself is uncertain by a tenth or more. With `clusters` (each impression's
    video id) that error is clustered by video (`mean_standard_error`), which is the honest one
    when a few videos dominate. With `unknown` (True where the ranker did not know the impressed
    video) each bin also reports `unknown_share`, since known and unknown videos are calibrated
    by different evidence.
    """
    predicted_s = np.asarray(predicted_s, np.float64)
    observed_s = np.asarray(observed_s, np.float64)
    if predicted_s.shape != observed_s.shape or predicted_s.size < bins:
        raise ValueError(f"calibration needs matching arrays of at least {bins} predictions, got "
                         f"{predicted_s.shape} and {observed_s.shape}")
    for name, values in (("unknown", unknown), ("clusters", clusters)):
        if values is not None and np.shape(values) != predicted_s.shape:
            raise ValueError(f"{name} has shape {np.shape(values)}, the predictions {predicted_s.shape}")
    clusters = None if clusters is None else np.asarray(clusters)
    order = np.argsort(predicted_s, kind="stable")
    rows = []
    for decile, members in enumerate(np.array_split(order, bins), start=1):
        rows.append({"decile": decile, **_calibration_row(predicted_s, observed_s, members, clusters)})
        if unknown is not None:
            rows[-1]["unknown_share"] = float(np.mean(np.asarray(unknown)[members]))
    return rows


def calibration_by_group(predicted_s: np.ndarray, observed_s: np.ndarray, groups: np.ndarray,
                         clusters: np.ndarray | None = None) -> list[dict]:
    """Mean predicted against mean observed watch time within each group of impressions (such as
    known or unknown video, by video age), groups in sorted order, with `calibration_deciles`'
    columns (standard errors clustered by `clusters` when given). A ranker calibrated per decile
    can still be off within groups that the deciles mix, and if the mix changes between the
    calibration slice and serving, so does its decile error.
    """
    predicted_s = np.asarray(predicted_s, np.float64)
    observed_s = np.asarray(observed_s, np.float64)
    groups = np.asarray(groups)
    clusters = None if clusters is None else np.asarray(clusters)
    if not predicted_s.shape == observed_s.shape == groups.shape or (
            clusters is not None and clusters.shape != groups.shape):
        raise ValueError(f"calibration_by_group needs arrays of one shape, got {predicted_s.shape}, "
                         f"{observed_s.shape}, groups {groups.shape} and clusters "
                         f"{None if clusters is None else clusters.shape}")
    return [{"group": group.item() if hasattr(group, "item") else group,
             **_calibration_row(predicted_s, observed_s, np.flatnonzero(groups == group), clusters)}
            for group in np.unique(groups)]


def max_calibration_error(rows: list[dict]) -> float:
    """The largest |predicted / observed - 1| over calibration bins."""
    return float(max(abs(r["predicted_s"] / r["observed_s"] - 1.0) if r["observed_s"] > 0 else np.inf
                     for r in rows))
