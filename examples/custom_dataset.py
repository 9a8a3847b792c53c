"""Your own data: five pandas tables -> the event-log schema -> both stages -> a recommendation.

    python examples/custom_dataset.py

The tables here are made up in a few lines of pandas to stand in for yours (a catalogue of
videos with topics, users with a favourite topic). Replace `make_tables` with your own loading
code: only the column names and types of `tfrs_youtube.data.schema.SCHEMA` matter (extra columns
are allowed and ignored). `EventLog.validate()` checks every table before training and raises a
`SchemaError` naming the table, the column and the row of the first bad value.

TFRS_YOUTUBE_EXAMPLE_SIZE=small uses fewer users and one epoch.
"""

import os

import numpy as np
import pandas as pd

import tfrs_youtube  # noqa: F401  (first: selects Keras 2)
from tfrs_youtube import as_tensors, EventLog, requests_at, SCHEMA, SchemaError, train_two_stage, TrainConfig

SMALL = os.environ.get("TFRS_YOUTUBE_EXAMPLE_SIZE") == "small"
DAY = 86_400


def make_tables(num_users: int, num_videos: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Stand-in for your data: users mostly watch (and search for, and click) their topic."""
    rng = np.random.default_rng(seed)
    topics = np.array(["music", "cooking", "news", "gaming", "science"])
    words = {t: [f"{t}", f"{t}_tips", f"best_{t}"] for t in topics}
    videos = pd.DataFrame({
        "video_id": [f"vid-{i}" for i in range(num_videos)],
        "upload_time": rng.integers(0, 50 * DAY, num_videos),   # seconds on your clock
        "language": rng.choice(["en", "es"], num_videos, p=[0.8, 0.2]),
        "duration_s": rng.uniform(60, 1200, num_videos).round(),
        "topic": rng.choice(topics, num_videos),
        "title": [f"video number {i}" for i in range(num_videos)],  # extra columns are fine
    })
    users = pd.DataFrame({
        "user_id": [f"user-{i}" for i in range(num_users)],
        "country": rng.choice(["US", "MX", "GB"], num_users),
        "language": "en",
        "gender": rng.choice(["female", "male", "unknown"], num_users),
        "age": rng.integers(13, 70, num_users).astype(float),
        "device": rng.choice(["mobile", "desktop", "tv"], num_users),
    })
    favourite = rng.choice(topics, num_users)
    popularity = rng.lognormal(0, 1.5, num_videos)
    watches, searches, impressions = [], [], []
    for u, user in enumerate(users["user_id"]):
        liked = np.where(videos["topic"] == favourite[u], 8.0, 1.0) * popularity
        for t in np.sort(rng.integers(50 * DAY, 60 * DAY, rng.integers(5, 40))):
            available = videos["upload_time"].to_numpy() <= t
            v = rng.choice(num_videos, p=liked * available / (liked * available).sum())
            watches.append((user, videos["video_id"][v], t, float(rng.uniform(0.2, 1.0) * videos["duration_s"][v]),
                            rng.choice(["home", "search", "related"])))
            if rng.random() < 0.3:
                searches.append((user, t - 60, " ".join(rng.choice(words[videos["topic"][v]], 2))))
            for s in rng.choice(num_videos, 5, replace=False):  # a page of 5 impressions a minute before
                clicked = int(rng.random() < (0.4 if videos["topic"][s] == favourite[u] else 0.05))
                impressions.append((user, videos["video_id"][s], t - 30, clicked,
                                    float(clicked * rng.uniform(0.1, 1.0) * videos["duration_s"][s])))
    return {
        "users": users, "videos": videos,
        "watches": pd.DataFrame(watches, columns=list(SCHEMA["watches"])),
        "searches": pd.DataFrame(searches, columns=list(SCHEMA["searches"])),
        "impressions": pd.DataFrame(impressions, columns=list(SCHEMA["impressions"])),
    }


tables = make_tables(num_users=200 if SMALL else 2000, num_videos=300 if SMALL else 2000)
for name, columns in SCHEMA.items():
    print(f"{name:<12} {len(tables[name]):>7} rows; needs {dict(columns)}")

# 1. Validation: a bad value is named before it can reach a model.
negative_row_3 = tables["watches"].assign(watch_time_s=lambda w: w["watch_time_s"].where(w.index != 3, -1.0))
broken = dict(tables, watches=negative_row_3)
try:
    EventLog(**broken).validate()
except SchemaError as err:
    print(f"\nrejected as expected: {err}")
log = EventLog(**tables, name="my_service").validate()

# 2. Both stages, with a cut in time: the last 10% of the log is held out. The examples are made
#    by the Beam pipeline (in a temporary folder here; `tfrs_youtube.pipeline.build_examples(log,
#    DIR, ...)` or `tfrs-youtube data examples` keep them, for `train_two_stage(examples=...)`).
config = TrainConfig()
config.examples.split = "time"
config.candidate_epochs = config.ranker_epochs = 1 if SMALL else 4
config.serving.num_candidates = 100
system = train_two_stage(log, config, verbose=2)
print("\nheld-out next watch, HR@10:",
      {name: round(m["HR@10"], 3) for name, m in system.report["retrieval"].items()})
print("held-out impressions, AUC:", {name: round(system.report["ranking"][name]["auc"], 3)
                                     for name in ("tfrs_youtube", "most_popular", "random")})

# 3. A recommendation for one user, as of the end of the log: the request holds what a training
#    example at that moment would (the same selection of watches, searches and impressions).
now = int(log.watches["time"].max()) + 1
user = 0
request = requests_at(log, [log.users["user_id"][user]], [now], system.examples.contract, system.examples.user_fields)
top = system.recommender.recommend(as_tensors(request))
topic = dict(zip(log.videos["video_id"], log.videos["topic"]))
history = [topic[v] for v in request["watch_history"][0] if v]
print(f"\n{log.users['user_id'][user]} watched topics {pd.Series(history).value_counts().to_dict()}; top 10:")
for video, seconds in zip(top["video_ids"][0].numpy().astype(str), top["expected_watch_time_s"][0].numpy()):
    print(f"  {video:<9} {topic[video]:<8} expected watch time {seconds:6.1f} s")
