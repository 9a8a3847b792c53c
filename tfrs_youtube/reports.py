"""How well the trained stages do on the held-out examples, beside the baselines a user would
otherwise pick (chance, most popular): what `train_two_stage`, `tfrs-youtube evaluate`, the demo
and the benchmarks report, each through the same functions.

- Retrieval: each held-out target ranked against the full corpus, the user's earlier watches
  excluded (they would be filtered at serving): HR/NDCG/MAP@K (`evaluation`).
- Ranking: held-out pages scored by the ranker: AUC, the paper's weighted per-user loss, and
  calibration per decile of exp(logit).
- The served lists: each test request served by the two-stage model, scored against the user's
  whole future: did the list hold the next watch, and what share of later watch time it covers.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfrs_youtube import requests as request_tools
from tfrs_youtube.evaluation import (DEFAULT_KS, auc, calibration_deciles, evaluate_popularity, evaluate_random,
                                     evaluate_retrieval, max_calibration_error, observed_watch_time,
                                     weighted_per_user_loss)
from tfrs_youtube.inputs import arrays, dataset
from tfrs_youtube.pipeline.example_set import ExampleSet


def predict(fn, features: dict[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """`fn` (a model or layer) over numpy feature arrays in batches, concatenated as numpy."""
    n = len(next(iter(features.values())))
    out = [fn({k: tf.constant(v[i:i + batch_size]) for k, v in features.items()}).numpy()
           for i in range(0, n, batch_size)]
    return np.concatenate(out) if out else np.zeros((0,))


def item_vectors(candidate) -> np.ndarray:
    """The candidate generator's vector of every video, in the video table's order (row i is
    index i + 1)."""
    size = candidate.embeddings.video.vocabulary_size
    return candidate.video_vectors(tf.range(1, size + 1, dtype=tf.int64)).numpy()


def user_vectors(candidate, examples: ExampleSet, split: str) -> np.ndarray:
    from tfrs_youtube.candidate import candidate_features

    names = [n for n in candidate_features(candidate.embeddings) if n != "video_id"]
    return np.concatenate([candidate.user_tower(batch).numpy() for batch in
                           dataset(examples, "retrieval", split, 4096, features=tuple(names))])


def retrieval_report(candidate, examples: ExampleSet, split: str = "test", ks=DEFAULT_KS, baselines: bool = True,
                     seed: int = 0, index: str = "exact", exclude_watched: bool = True) -> dict:
    """Full-corpus HR/NDCG/MAP@K of a split's targets, each user's whole history excluded (unless
    `exclude_watched` is False), by exact search or by ScaNN (`index`), with most-popular and
    chance beside it."""
    held_out = arrays(examples, "retrieval", split, ("video_id", "watched"))
    if len(held_out["video_id"]) == 0:
        return {}
    targets = held_out["video_id"] - 1  # row of the item vectors
    exclude = [w - 1 for w in held_out["watched"]] if exclude_watched else None
    report = {"tfrs_youtube": evaluate_retrieval(user_vectors(candidate, examples, split), item_vectors(candidate),
                                                 targets, exclude, ks, index=index)}
    if baselines:
        counts = examples.label_counts()[1:]
        report["most_popular"] = evaluate_popularity(counts, targets, exclude, ks)
        report["random"] = evaluate_random(len(counts), targets, exclude, ks, seed=seed)
    return report


def ranked_impressions(models, examples: ExampleSet, config, split: str = "test") -> dict[str, np.ndarray]:
    """Every impression of a split's pages with the ranker's calibrated logit: page (its record),
    video index, clicked, watch time, video age."""
    from tfrs_youtube.training import ranking_dataset

    out = {name: [] for name in ("page", "video_id", "clicked", "watch_time_s", "logit", "video_age_s")}
    offset = 0
    for batch in ranking_dataset(examples, models, config, split, batch_pages=512):
        mask = batch["impression_mask"]
        pages = tf.broadcast_to(tf.range(tf.shape(mask)[0], dtype=tf.int64)[:, None] + offset, tf.shape(mask))
        offset += int(mask.shape[0])
        derived = models.embeddings.candidate_features(batch, batch["video_id"])
        for name, value in (("page", pages), ("video_id", batch["video_id"]), ("clicked", batch["clicked"]),
                            ("watch_time_s", batch["watch_time_s"]), ("logit", models.ranker(batch)),
                            ("video_age_s", derived["video_age_s"])):
            out[name].append(tf.boolean_mask(value, mask).numpy())
    return {name: np.concatenate(v) if v else np.zeros(0) for name, v in out.items()}


def ranking_report(models, examples: ExampleSet, config, split: str = "test") -> dict:
    """AUC, weighted per-user loss and calibration on held-out impressions, beside popularity
    and chance."""
    shown = ranked_impressions(models, examples, config, split)
    if len(shown["logit"]) == 0:
        return {}
    pages, clicked, watch, logits = shown["page"], shown["clicked"], shown["watch_time_s"], shown["logit"]
    scorers = {"tfrs_youtube": logits,
               "most_popular": examples.label_counts()[shown["video_id"]].astype(np.float64),
               "random": np.random.default_rng(0).random(len(clicked))}
    clicked_watch = observed_watch_time(clicked, watch)
    # Errors clustered by video: impressions of one hit video are not independent draws.
    calibration = calibration_deciles(np.exp(logits), clicked_watch, clusters=shown["video_id"])
    return {
        name: {"auc": auc(clicked, s), "weighted_per_user_loss": weighted_per_user_loss(pages, clicked, watch, s)}
        for name, s in scorers.items()
    } | {"mean_expected_watch_time_s": float(np.exp(logits).mean()),
         "mean_observed_watch_time_s": float(clicked_watch.mean()),
         "calibration": calibration, "max_calibration_error": max_calibration_error(calibration)}


def held_out_requests(examples: ExampleSet) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The test split's serving requests, and its records (labels, futures) beside them."""
    records = arrays(examples, "retrieval", "test")
    return request_tools.from_examples(examples, records), records


def first_k_unwatched(ranked: np.ndarray, history: np.ndarray, k: int) -> np.ndarray:
    """Per row, the first k ids of `ranked` (a row per user, or one shared row) not in the history."""
    out = np.empty((len(history), k), dtype=object)
    for i, seen in enumerate(history):
        row, seen = (ranked[i] if ranked.ndim == 2 else ranked), set(seen)
        out[i] = ([v for v in row if v not in seen] + [""] * k)[:k]
    return out


def two_stage_report(recommender, examples: ExampleSet) -> dict:
    """The served top-K lists (index -> ranker) against retrieval's order and most-popular.

    Two views of each user's held-out future, from the moment of their test request: did the
    list contain the next watch (HR@K), and what share of all their later watch time went to
    videos on the list (watch-time recall@K, the quantity the ranker is trained to order by).
    """
    requests, records = held_out_requests(examples)
    if len(records["video_id"]) == 0:
        return {}
    served, retrieved = [], []
    for i in range(0, len(records["video_id"]), 1024):
        chunk = request_tools.as_tensors(request_tools.take(requests, slice(i, i + 1024)))
        served.append(recommender.recommend(chunk)["video_ids"].numpy().astype(str))
        retrieved.append(recommender.retrieve(recommender.user_request(chunk))["video_ids"].numpy().astype(str))
    served = np.concatenate(served)
    k = served.shape[1]
    history = requests["watch_history"]
    vocabulary = np.asarray(examples.vocabulary("video"), dtype=object)
    popular = vocabulary[np.argsort(-examples.label_counts()[1:], kind="stable")][: k + history.shape[1]]
    lists = {"tfrs_youtube": served,
             "retrieval_order": first_k_unwatched(np.concatenate(retrieved), history, k),
             "most_popular": first_k_unwatched(popular, history, k)}
    names = np.r_[np.array([""], dtype=object), vocabulary]
    labels = names[records["video_id"]]
    futures = [(names[v], np.asarray(w, np.float64)) for v, w in zip(records["future_videos"],
                                                                   records["future_watch_time_s"])]
    report = {}
    for name, ids in lists.items():
        listed = [set(row) for row in ids]
        hits = np.array([label in row for label, row in zip(labels, listed)])
        shares = [w[np.isin(v, list(row))].sum() / w.sum() for (v, w), row in zip(futures, listed) if w.sum() > 0]
        report[name] = {f"HR@{k}": float(hits.mean()), f"watch_time_recall@{k}": float(np.mean(shares))}
    return report
