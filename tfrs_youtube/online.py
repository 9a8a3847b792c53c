"""An online experiment in the simulator: what users would watch from each system's page.

The paper judges its ranker by live A/B tests (watch time per user), not by offline scores of
logged next watches, which reward whatever predicts organic behaviour rather than what a page
makes people watch. A simulator knows how every user responds to every page
(`data.simulator.Simulator.respond`), so the experiment can be run offline and exactly: for
held-out requests after the training cut (each user at a moment after the cut, the request
built from the log before it), each system serves a page of K videos, and the simulator scores
each page by its expected watch time and expected clicks (a page's expectation is the sum over
its slots: the simulator's slots do not interact).

Systems: the exported two-stage model (`serving_default`); retrieval alone (`retrieve`,
watched videos dropped, the first K); most popular (training watch counts); random; and two
ceilings from the simulator's truth: the best K of the same N retrieved candidates (the
ranker's ceiling) and the best K of the whole corpus uploaded by then (the system's).

Every system is scored alike: a video the user watched before the request, or one not yet
uploaded, earns nothing (the simulated users do not re-watch from a page; a future video
cannot be watched). Differences against retrieval alone are paired per request, so their
standard errors leave out how much requests differ from one another.
"""

from __future__ import annotations

import numpy as np

from tfrs_youtube import requests as request_tools
from tfrs_youtube.data.event_counts import count_before
from tfrs_youtube.data.schema import EventLog
from tfrs_youtube.reports import first_k_unwatched

SYSTEMS = ("two_stage", "retrieval_only", "most_popular", "random", "candidate_oracle", "corpus_oracle")
REQUEST_BATCH = 512


def held_out_moments(log: EventLog, cut: int, num_requests: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One request per user (all users, or `num_requests` of them drawn without replacement), at a
    time drawn uniformly between the cut and the log's last event: (user ids, times)."""
    rng = np.random.default_rng([seed, 20])
    users = log.users["user_id"].to_numpy(object)
    if num_requests is not None and num_requests < len(users):
        users = users[np.sort(rng.choice(len(users), num_requests, replace=False))]
    end = int(max(log.watches["time"].max(), log.impressions["time"].max() if len(log.impressions) else cut))
    if end <= cut:
        raise ValueError(f"the log ends at {end}, not after the cut {cut}: nothing is held out")
    times = rng.integers(cut + 1, end + 1, len(users))
    return users, times


class Scorer:
    """Scores pages of video indices for (user, time) requests with the simulator's truth.

    Args:
      simulator: the `Simulator` that wrote `log`.
      log: its event log (what each user watched and was shown before each request).
      users, times: the requests' user ids and times.
    """

    def __init__(self, simulator, log: EventLog, users: np.ndarray, times: np.ndarray):
        self.simulator = simulator
        self.users = simulator.user_index(np.asarray(users, dtype=object))
        self.times = np.asarray(times, np.int64)
        self._events = {name: (simulator.user_index(table["user_id"].to_numpy(object)),
                               simulator.video_index(table["video_id"].to_numpy(object)), table["time"].to_numpy())
                        for name, table in (("watches", log.watches), ("impressions", log.impressions))}

    def indices(self, ids: np.ndarray) -> np.ndarray:
        """Video ids ("" or unknown: -1) -> the simulator's video indices."""
        return self.simulator.video_index(np.asarray(ids, dtype=object))

    def _before(self, events: str, pages: np.ndarray, rows) -> np.ndarray:
        return count_before(*self._events[events], self.users[rows], self.times[rows], pages)

    def respond(self, pages: np.ndarray, rows=slice(None)):
        """The simulator's response to pages of video indices ([n, k], -1 empty) for the requests
        `rows`; a video the user watched before the request earns nothing (as an empty slot)."""
        pages = np.where(self._before("watches", pages, rows) > 0, -1, pages)
        return self.simulator.respond(self.users[rows], self.times[rows], pages,
                                      shown_before=self._before("impressions", pages, rows))

    def best_of(self, candidates: np.ndarray, k: int, rows=slice(None)) -> np.ndarray:
        """Per request, the k candidates (video indices, -1 padding) of the highest expected watch
        time, best first: the oracle (slots do not interact, so the k best videos make the best
        page). Watched videos, future ones and padding are never picked; -1 fills what is left."""
        watched = self._before("watches", candidates, rows) > 0
        shown = self._before("impressions", candidates, rows)
        return self.simulator.best_pages(self.users[rows], self.times[rows], np.where(watched, -1, candidates), k,
                                         shown_before=shown)

    def best_of_corpus(self, k: int, chunk: int = 256) -> np.ndarray:
        """Per request, the best k videos of the whole corpus."""
        everything = np.arange(self.simulator.num_videos)
        return np.concatenate([
            self.best_of(np.broadcast_to(everything, (len(self.users[i:i + chunk]), len(everything))), k,
                         slice(i, i + chunk))
            for i in range(0, len(self.users), chunk)])


def _serve(fn, requests: dict[str, np.ndarray], output: str = "video_ids") -> np.ndarray:
    names = list(fn.structured_input_signature[1])
    n = len(requests["request_time"])
    out = []
    for i in range(0, n, REQUEST_BATCH):
        batch = request_tools.as_tensors(request_tools.take({name: requests[name] for name in names},
                                                            slice(i, i + REQUEST_BATCH)))
        out.append(fn(**batch)[output].numpy().astype(str).astype(object))
    return np.concatenate(out)


def pages_of_systems(model, scorer: Scorer, requests: dict[str, np.ndarray], popular: np.ndarray,
                     corpus: np.ndarray, k: int, seed: int) -> dict[str, np.ndarray]:
    """Each system's page (video indices, -1 empty) per request; `model` is a loaded SavedModel,
    `popular` the served corpus's ids by training popularity, `corpus` the served ids."""
    served = _serve(model.signatures["serving_default"], requests)[:, :k]
    retrieved = _serve(model.signatures["retrieve"], requests)
    history = requests["watch_history"]
    rng = np.random.default_rng([seed, 21])
    shuffled = np.stack([corpus[rng.permutation(len(corpus))[: k + history.shape[1]]] for _ in range(len(history))])
    candidates = scorer.indices(retrieved)
    return {
        "two_stage": scorer.indices(served),
        "retrieval_only": scorer.indices(first_k_unwatched(retrieved, history, k)),
        "most_popular": scorer.indices(first_k_unwatched(popular[: k + history.shape[1]], history, k)),
        "random": scorer.indices(first_k_unwatched(shuffled, history, k)),
        "candidate_oracle": scorer.best_of(candidates, k),
        "corpus_oracle": scorer.best_of_corpus(k),
    }


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def score_pages(scorer: Scorer, pages: dict[str, np.ndarray], baseline: str = "retrieval_only") -> dict:
    """Per system the mean expected watch time and clicks per page with standard errors, the
    paired differences against `baseline`, and the share of the baseline's gap to the candidate
    oracle that the two-stage page closes."""
    per_request = {}
    systems = {}
    for name, page in pages.items():
        response = scorer.respond(page)
        watch, clicks = response.expected_watch_time.sum(axis=1), response.click_probability.sum(axis=1)
        per_request[name] = watch
        (w, w_se), (c, c_se) = _mean_se(watch), _mean_se(clicks)
        systems[name] = {"watch_time_s": w, "watch_time_se": w_se, "clicks": c, "clicks_se": c_se}
    paired = {}
    for name, watch in per_request.items():
        if name != baseline:
            diff, diff_se = _mean_se(watch - per_request[baseline])
            paired[name] = {"diff_s": diff, "diff_se": diff_se}
    gap = systems["candidate_oracle"]["watch_time_s"] - systems[baseline]["watch_time_s"]
    closed = paired["two_stage"]["diff_s"] / gap if gap > 0 else float("nan")
    return {"systems": systems, f"paired_vs_{baseline}": paired, "gap_closed": float(closed),
            "requests": int(len(scorer.users))}


def run_online_experiment(simulator, log: EventLog, examples, model, k: int, num_requests: int | None = None,
                          seed: int = 0) -> dict:
    """The whole experiment: held-out requests after the examples' cut, each system's page from
    the loaded SavedModel `model` (or the baselines and oracles), scored by the simulator."""
    cut = examples.cuts.watch_cutoff
    if cut is None:
        raise ValueError("the online experiment needs examples cut in time (ExampleConfig(split='time'))")
    users, times = held_out_moments(log, cut, num_requests, seed)
    requests = request_tools.at(log, users, times, examples.contract, user_fields=examples.user_fields)
    scorer = Scorer(simulator, log, users, times)
    corpus = np.asarray(examples.vocabulary("video"), dtype=object)
    popular = corpus[np.argsort(-examples.label_counts()[1:], kind="stable")]
    pages = pages_of_systems(model, scorer, requests, popular, corpus, k, seed)
    report = score_pages(scorer, pages)
    report.update({"k": int(k), "cut": int(cut), "seed": int(seed)})
    return report


def check_model(model) -> None:
    """The experiment needs a two-stage export (a retrieval-only one has no ranker to judge)."""
    missing = {"serving_default", "retrieve", "rank"} - set(model.signatures)
    if missing:
        raise ValueError(f"the online experiment needs a two-stage SavedModel; this one lacks {sorted(missing)}")
