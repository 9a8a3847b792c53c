"""The main job: synthetic log -> both stages -> one SavedModel -> answers from a fresh process.

It shows the whole system working on data with a known structure: the figures on held-out
later events beside chance and most-popular; the online experiment (`online`), where the
simulator that wrote the log scores each system's page by what its users would watch, with the
oracles' ceilings; then the top-10 of three users, served by the exported model in a new Python
process, next to the topics they recently watched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrs_youtube import presets
from tfrs_youtube.data.directory import write_dataset
from tfrs_youtube.data.simulator import Simulator
from tfrs_youtube.data.synthetic import SyntheticConfig
from tfrs_youtube.export import export_with_warmup, read_metadata
from tfrs_youtube.online import run_online_experiment
from tfrs_youtube.pipeline import build_examples
from tfrs_youtube.reports import held_out_requests
from tfrs_youtube.requests import rest_body
from tfrs_youtube.system import TrainedSystem, train_two_stage
from tfrs_youtube.training import TrainConfig


@dataclasses.dataclass
class DemoConfig:
    """Sizes of the demo; the defaults take a few minutes on 2 CPU cores."""

    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
    train: TrainConfig = dataclasses.field(default_factory=presets.synthetic_demo)
    datasets_dir: str = "datasets"
    saved_models_dir: str = "saved_models"
    model_name: str = "demo"
    num_shown_users: int = 3
    workers: int = 1  # example pipeline processes


def _format_table(report: dict) -> str:
    lines = ["", "Retrieval on each user's held-out next watch (full corpus, watched videos excluded):",
             f"  {'system':<14}{'HR@10':>8}{'HR@50':>8}{'HR@100':>8}{'NDCG@10':>9}"]
    for name, m in report["retrieval"].items():
        lines.append(f"  {name:<14}{m['HR@10']:>8.3f}{m['HR@50']:>8.3f}{m['HR@100']:>8.3f}{m['NDCG@10']:>9.3f}")
    if "ranking" in report:
        lines += ["", "Ranking of held-out later impressions:",
                  f"  {'system':<14}{'AUC':>8}{'weighted per-user loss':>25}"]
        for name in ("tfrs_youtube", "most_popular", "random"):
            m = report["ranking"][name]
            lines.append(f"  {name:<14}{m['auc']:>8.3f}{m['weighted_per_user_loss']:>25.3f}")
        ranking = report["ranking"]
        lines.append(f"  mean exp(logit) {ranking['mean_expected_watch_time_s']:.1f} s vs mean observed "
                     f"watch time per impression {ranking['mean_observed_watch_time_s']:.1f} s; per decile of "
                     f"exp(logit), the largest gap is {ranking['max_calibration_error']:.0%}")
    two = report["two_stage"]
    k = next(key for key in two["tfrs_youtube"] if key.startswith("HR@"))[3:]
    lines += ["", f"Served top-{k} on each user's held-out future (next watch; share of later watch time on the list):",
              f"  {'list':<17}{'HR@' + k:>8}{'watch-time recall@' + k:>24}"]
    for name, label in (("tfrs_youtube", "two-stage"), ("retrieval_order", "retrieval only"),
                        ("most_popular", "most popular")):
        m = two[name]
        lines.append(f"  {label:<17}{m['HR@' + k]:>8.3f}{m['watch_time_recall@' + k]:>24.3f}")
    return "\n".join(lines)


ONLINE_LABELS = {"two_stage": "two-stage", "retrieval_only": "retrieval only", "most_popular": "most popular",
                 "random": "random", "candidate_oracle": "best of the candidates", "corpus_oracle": "best of the corpus"}


def format_online(online: dict) -> str:
    """The online experiment's table: expected watch time and clicks per page, with SEs."""
    lines = ["", f"Online, in the simulator: one request per user after the cut, a page of {online['k']}; expected "
                 "watch time and clicks per page (± SE), paired difference against retrieval alone:",
             f"  {'page':<24}{'watch time s':>16}{'clicks':>14}{'vs retrieval s':>18}"]
    paired = online["paired_vs_retrieval_only"]
    for name, label in ONLINE_LABELS.items():
        m = online["systems"][name]
        diff = f"{paired[name]['diff_s']:+.1f} ± {paired[name]['diff_se']:.1f}" if name in paired else ""
        lines.append(f"  {label:<24}{m['watch_time_s']:>9.1f} ± {m['watch_time_se']:<5.1f}"
                     f"{m['clicks']:>7.2f} ± {m['clicks_se']:<4.2f}{diff:>18}")
    lines.append(f"  the ranker closes {online['gap_closed']:.0%} of the gap between retrieval's order and the best "
                 "order of the same candidates")
    return "\n".join(lines)


def serve_in_fresh_process(model_dir: str, request: dict) -> dict:
    """Runs `tfrs-youtube recommend` in a new Python process and returns its JSON answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(request, f)
        path = f.name
    try:
        out = subprocess.run([sys.executable, "-m", "tfrs_youtube", "recommend", "--model", model_dir,
                              "--request", path], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"the fresh serving process failed:\n{err.stderr[-3000:]}") from err
    finally:
        os.unlink(path)
    return json.loads(out.stdout)


def show_recommendations(system: TrainedSystem, model_dir: str, num_users: int, out=print) -> dict:
    """Top-10 of a few test users from the exported model, next to their recent watches' topics."""
    examples = system.examples
    requests, records = held_out_requests(examples)
    rng = np.random.default_rng(system.config.seed)
    active = np.flatnonzero((requests["watch_history"] != "").sum(axis=1) >= 10)
    rows = rng.choice(active if len(active) >= num_users else np.arange(len(records["video_id"])),
                      num_users, replace=False)
    answer = serve_in_fresh_process(model_dir, rest_body(requests, rows))
    vocabulary = examples.vocabulary("video")
    topics = np.asarray([""] + examples.vocabulary("topic"), dtype=object)  # index 0: unknown
    topic = dict(zip(vocabulary, topics[examples.statistics["catalog_topic"][1:]]))
    for j, prediction in enumerate(answer["predictions"]):
        i = rows[j]
        recent = [topic[v] for v in requests["watch_history"][i][:10] if v]
        counts = pd.Series(recent).value_counts()
        label = vocabulary[records["video_id"][i] - 1]
        out(f"\nuser {records['user_id'][i].decode()} ({requests['country'][i]}, {requests['language'][i]}); "
            f"topics of the last {len(recent)} watches: " + ", ".join(f"{t} x{c}" for t, c in counts.items()))
        out(f"  {'#':>3}  {'video':<12}{'topic':<14}{'expected watch s':>18}")
        for rank, (vid, wt) in enumerate(zip(prediction["video_ids"], prediction["expected_watch_time_s"]), 1):
            out(f"  {rank:>3}  {vid:<12}{topic.get(vid, '?'):<14}{wt:>18.1f}")
        out(f"  held-out next watch: {label} ({topic[label]})")
    return answer


def run_demo(config: DemoConfig | None = None, out=print) -> dict:
    """Runs the whole demo; returns the report (figures, export path, served answer)."""
    config = config or DemoConfig()
    started = time.perf_counter()
    out(f"generating the synthetic event log ({config.synthetic.num_users} users, "
        f"{config.synthetic.num_videos} videos, seed {config.synthetic.seed})")
    simulator = Simulator(config.synthetic)
    log = simulator.event_log()
    data_dir = os.path.join(config.datasets_dir, "synthetic")
    write_dataset(log, data_dir, {"source": "synthetic", "synthetic": dataclasses.asdict(config.synthetic)},
                  replace=True)
    out(f"  {len(log.watches)} watches, {len(log.searches)} searches, {len(log.impressions)} impressions "
        f"-> {data_dir}/")
    examples = build_examples(data_dir, data_dir + "_examples", config.train.examples, seed=config.train.seed,
                              workers=config.workers, replace=True, say=out)
    system = train_two_stage(None, config.train, examples=examples)
    report = system.report
    out(_format_table(report))

    metadata = {"config": config.train.to_dict(), "synthetic": dataclasses.asdict(config.synthetic),
                "evaluation": report}
    paths = export_with_warmup(system.recommender, examples, config.saved_models_dir, config.model_name, metadata)
    model_dir = paths["scann"]
    n = system.recommender.config.num_candidates
    recall = read_metadata(model_dir)["index"][f"recall_at_{n}"]
    out(f"\nexported the two-stage SavedModel to {model_dir} (ScaNN finds {recall:.1%} of the exact top-{n})")
    out(f"and its portable twin (core TensorFlow ops only, exact search) to {paths['portable']}")
    report["online"] = run_online_experiment(simulator, log, examples, tf.saved_model.load(model_dir),
                                             k=system.recommender.config.k, seed=config.train.seed)
    out(format_online(report["online"]))
    out("serving three users from a fresh Python process (tfrs-youtube recommend):")
    answer = show_recommendations(system, model_dir, config.num_shown_users, out=out)
    out(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return {"report": report, "model_dir": model_dir, "portable_model_dir": paths["portable"], "answer": answer}
