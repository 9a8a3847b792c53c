"""Writes a MovieLens-1M-sized log in the 1M file format, from the synthetic simulator.

    python benchmarks/movielens_like.py --out DIR [--users 6040] [--items 3952] [--ratings 1000209]

MovieLens 1M itself may not be redistributed and is not on our machines; this stands in for it
where the point is size and format (how long the retrieval benchmark takes, how much memory it
needs), not the figures. Each synthetic watch becomes a rating: the rating grows with the share
of the video watched; repeat watches of a video keep the first.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tfrs_youtube import generate_event_log, SyntheticConfig  # noqa: E402

AGE_GROUPS = np.array([1, 18, 25, 35, 45, 50, 56])
START = 956_703_932  # the first timestamp of MovieLens 1M


def write_movielens_like(out: str, users: int, items: int, ratings: int, seed: int = 0) -> None:
    config = SyntheticConfig(num_users=users, num_videos=items, watches_per_user=ratings / users * 2.9,
                             impression_pages_per_user=2.0, days=1000.0, seed=seed)
    log = generate_event_log(config)
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    user_index = {u: i + 1 for i, u in enumerate(log.users.user_id)}
    video_index = {v: i + 1 for i, v in enumerate(log.videos.video_id)}

    watches = log.watches.drop_duplicates(["user_id", "video_id"]).head(ratings)
    duration = log.videos.set_index("video_id").duration_s.reindex(watches.video_id).to_numpy()
    share = np.clip(watches.watch_time_s.to_numpy() / duration, 0, 1)
    rating = np.clip(np.ceil(share * 5), 1, 5).astype(int)
    with open(os.path.join(out, "ratings.dat"), "w", encoding="latin-1") as f:
        for u, v, r, t in zip(watches.user_id, watches.video_id, rating, watches.time):
            f.write(f"{user_index[u]}::{video_index[v]}::{r}::{START + int(t)}\n")
    with open(os.path.join(out, "users.dat"), "w", encoding="latin-1") as f:
        genders = np.where(log.users.gender.to_numpy() == "f", "F", "M")
        ages = AGE_GROUPS[np.clip(np.searchsorted(AGE_GROUPS, log.users.age.to_numpy(), side="right") - 1, 0, 6)]
        for u, g, a, occupation, zip_code in zip(log.users.user_id, genders, ages, rng.integers(0, 21, users),
                                                 rng.integers(10000, 99999, users)):
            f.write(f"{user_index[u]}::{g}::{a}::{occupation}::{zip_code}\n")
    with open(os.path.join(out, "movies.dat"), "w", encoding="latin-1") as f:
        for v, topic, upload in zip(log.videos.video_id, log.videos.topic, log.videos.upload_time):
            year = 1919 + (int(upload) * 80) // max(int(log.videos.upload_time.max()), 1)
            f.write(f"{video_index[v]}::Video {v} ({year})::{topic.capitalize()}\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3952)
    parser.add_argument("--ratings", type=int, default=1_000_209)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_movielens_like(args.out, args.users, args.items, args.ratings, args.seed)
    print(f"wrote {args.out}/ratings.dat, users.dat, movies.dat")


if __name__ == "__main__":
    main()
