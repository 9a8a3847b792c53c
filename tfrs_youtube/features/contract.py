"""The request contract: what a request holds, in which order, how long, and over which window.

A training example and a serving request carry the same raw context, so the model cannot tell
them apart: the user's last watches with each watch's age, their last search tokens, the videos
they were shown lately with each impression's age, the request time and the user's fields.
Everything the models derive from it (time since the user last watched a candidate's topic,
how often a candidate was shown in the window, video age) is computed by the same Keras layers
in training and at serving (`features.context`), so the only thing the two sides must agree on
is this contract. The example pipeline builds every example by it, the export writes it into
its metadata, and a TF Serving client builds its requests by it.
"""

from __future__ import annotations

import dataclasses

DAY_S = 86_400.0
# The user's own fields every request holds; a data set may add more (`extra_user_features`).
STANDARD_USER_FIELDS = ("country", "language", "gender", "device")
# The histories whose ages come with them, element by element: ages input -> its history.
AGED_HISTORIES = {"watch_ages_s": "watch_history", "impression_ages_s": "impression_history"}


@dataclasses.dataclass(frozen=True)
class RequestContract:
    """Lengths, order and windows of a request's histories.

    Every history holds events strictly before the request time, most recent first, at most
    its length long; shorter histories may be padded with "" (ages 0), which the models ignore.

    Args:
      watch_history_length: watches kept (the paper's 50).
      search_history_length: search tokens kept, the last token of the latest search first.
      impression_history_length: impressions kept (pages shown to the user, newest first).
      impression_window_s: a candidate's previous impressions are those of the impression
        history younger than this (age < window).
      never_watched_s: the "time since the user last watched this topic" of a candidate whose
        topic is not in the watch history: longer than any real gap, so the quantile normaliser
        puts it at the top of the range.
    """

    watch_history_length: int = 50
    search_history_length: int = 50
    impression_history_length: int = 100
    impression_window_s: float = 7 * DAY_S
    never_watched_s: float = 365 * DAY_S

    def __post_init__(self):
        for name in ("watch_history_length", "search_history_length", "impression_history_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"RequestContract.{name} must be >= 1, got {getattr(self, name)}")
        if not self.impression_window_s > 0:
            raise ValueError(f"RequestContract.impression_window_s must be > 0, got {self.impression_window_s}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> dict:
        """The contract as a TF Serving client reads it (the export's metadata carries this)."""
        return {
            **self.to_dict(),
            "order": "most recent first",
            "events": "strictly before request_time",
            "padding": 'strings "", ages 0 (ignored)',
            "ages": "seconds between the event and request_time (float32, >= 0)",
            "request_time": "seconds on the clock of the videos' upload times (float64)",
            "search_tokens": "each query split on whitespace; the last token of the latest query first",
        }
