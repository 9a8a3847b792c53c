"""How examples are cut from an event log (paper 3.4), as one config the pipeline records.

Every watch is a label; the example for a watch at time t sees only events strictly before t
("rollback"), so the model learns to predict the future rather than to fill in a random hole.
Held-out watches are always later ones (each user's latest, or those after a cut in time), never
a random watch, and a per-user cap keeps heavy users from dominating the loss. Ranking examples
are one per impression, grouped by page (one user's impressions at one request), with the
user's context as of that request.
"""

from __future__ import annotations

import dataclasses

from tfrs_youtube.features.contract import DAY_S, RequestContract

SPLITS = ("user_last", "time")
TIES = ("exclude", "file_order")
TRAIN_CONTEXTS = ("rollback", "surrounding")
HELD_OUT_EXAMPLE_AGES = ("zero", "true")
# Cuts in time (the "time" split, the ranker's held-out and calibration periods) fall on whole
# hours: the pipeline finds them from hourly counts, which any number of workers sums exactly.
CUT_RESOLUTION_S = 3600


@dataclasses.dataclass
class ExampleConfig:
    """How examples are cut from the log.

    Args:
      history_length: watches kept in the history (most recent first), the paper's 50.
      search_history_length: search tokens kept (most recent first).
      impression_history_length: impressions a request carries (most recent first).
      impression_window_s: a candidate's previous impressions are counted over this window.
      max_examples_per_user: cap on training labels per user (sampled uniformly, seeded);
        None keeps all.
      split: "user_last" holds out each user's latest watches (`num_test` test targets, the
        `num_validation` before them for validation: the MovieLens protocol). "time" cuts the
        log at one moment (the first whole hour by which `1 - holdout_fraction` of the watches
        happened): each user's first watch after it is the test target, their last watch
        before it the validation target, and nothing after the cut trains either stage, so the
        ranker's held-out impressions are unseen by candidate generation too.
      num_test: with "user_last", each user's latest watches held out as test targets.
      num_validation: with "user_last", the watches before those, held out for validation.
      holdout_fraction: with "time", the share of watches after the cut.
      impression_test_fraction: with "user_last", the share of impressions (the latest, from a
        whole hour on) held out to test the ranker; with "time" the cut is the watches' one.
      calibration_fraction: the share of the ranker's training impressions (the latest) held
        out from fitting, to choose the epoch and fit the watch-time calibration. Make the slice
        span about as long a period as the model will serve before it is calibrated again: the
        calibration corrects what such a period does to the ranker (videos new to it, stale
        histories), and a shorter slice under-corrects (`benchmarks/ranking_table1.py`).
      ties: which watches a label's history holds. "exclude": only those strictly before its
        time (nothing at the same second). "file_order": every watch before it in the user's
        order by time, ties kept in file order (the MovieLens benchmark's protocol, where many
        ratings share a second). Searches and impressions are always strictly before.
      train_context: what a training label's history holds. "rollback" (the paper's choice,
        Figure 5b): only what the user did before the label. "surrounding" (Figure 5a, the
        classic held-out-random-watch setup): the user's whole training period, before and after
        the label, the label itself left out, most recent first; searches up to the period's
        end too; watch ages then count from the label's time in either direction. Held-out
        examples are requests and always see the past only.
      held_out_example_age: "zero" (held-out examples are requests made now, as at serving) or
        "true" (window end - their time, floored at 0).
      extra_user_features: further categorical columns of the users table (such as MovieLens'
        occupation) that examples carry and both models embed, when the table has them.
    """

    history_length: int = 50
    search_history_length: int = 50
    impression_history_length: int = 100
    impression_window_s: float = 7 * DAY_S
    max_examples_per_user: int | None = 100
    split: str = "user_last"
    num_test: int = 1
    num_validation: int = 1
    holdout_fraction: float = 0.1
    impression_test_fraction: float = 0.15
    calibration_fraction: float = 0.1
    ties: str = "exclude"
    train_context: str = "rollback"
    held_out_example_age: str = "zero"
    extra_user_features: tuple[str, ...] = ("occupation",)

    def __post_init__(self):
        for name, allowed in (("split", SPLITS), ("ties", TIES), ("train_context", TRAIN_CONTEXTS),
                              ("held_out_example_age", HELD_OUT_EXAMPLE_AGES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ExampleConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("holdout_fraction", "impression_test_fraction", "calibration_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"ExampleConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.split == "time" and self.holdout_fraction <= 0:
            raise ValueError("ExampleConfig.holdout_fraction must be > 0 with the 'time' split")
        if self.num_test < 0 or self.num_validation < 0:
            raise ValueError("ExampleConfig.num_test and num_validation must be >= 0")
        if self.max_examples_per_user is not None and self.max_examples_per_user < 1:
            raise ValueError(f"ExampleConfig.max_examples_per_user must be >= 1 or None, got "
                             f"{self.max_examples_per_user}")
        self.extra_user_features = tuple(self.extra_user_features)
        self.contract()  # checks the lengths and the window

    def contract(self) -> RequestContract:
        """The request contract these examples follow (and that serving requests must)."""
        return RequestContract(watch_history_length=self.history_length,
                               search_history_length=self.search_history_length,
                               impression_history_length=self.impression_history_length,
                               impression_window_s=float(self.impression_window_s))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExampleConfig":
        return cls(**data)
