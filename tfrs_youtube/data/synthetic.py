"""The synthetic service's settings and vocabulary: `SyntheticConfig`, countries, languages, topics.

`generate(config)` writes the seeded event log of a YouTube-like service; the simulator itself
(users, videos and the user model that answers pages) is `tfrs_youtube.data.simulator.Simulator`,
and its log writer is `tfrs_youtube.data.simulated_log`. Their module docstrings list the
properties they plant (heavy-tailed popularity, few topics per user, languages, search tokens,
freshness, clicks and watch times). The same config gives the same tables.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfrs_youtube.data.schema import EventLog

# (country, language, share of users). Unequal sizes on purpose, several countries per language.
COUNTRIES: tuple[tuple[str, str, float], ...] = (
    ("US", "en", 0.30), ("IN", "en", 0.16), ("GB", "en", 0.06), ("BR", "pt", 0.10),
    ("MX", "es", 0.08), ("ES", "es", 0.04), ("DE", "de", 0.08), ("FR", "fr", 0.07),
    ("JP", "ja", 0.11),
)
LANGUAGES: tuple[str, ...] = tuple(dict.fromkeys(lang for _, lang, _ in COUNTRIES))
GENDERS: tuple[str, ...] = ("female", "male", "unknown")
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tv", "tablet")

# Search vocabulary per topic: 12 tokens each, disjoint across topics (the first is the name).
_VOCABULARY: dict[str, str] = {
    "music": "music song guitar lyrics concert album piano remix singer band drums playlist",
    "gaming": "gaming gameplay minecraft speedrun walkthrough esports console fortnite boss rpg multiplayer streamer",
    "news": "news election politics breaking president economy report interview parliament headlines debate journalist",
    "sports": "sports football soccer basketball tennis highlights goal olympics cricket baseball match league",
    "cooking": "cooking recipe baking pasta dinner chef bread vegan dessert kitchen curry grill",
    "comedy": "comedy funny prank standup sketch parody jokes bloopers sitcom meme satire improv",
    "education": "education lecture tutorial lesson exam university math grammar course homework study teacher",
    "science": "science physics chemistry biology space nasa experiment quantum astronomy evolution atoms research",
    "technology": "technology smartphone unboxing laptop review gadget android iphone coding software ai robot",
    "travel": "travel vlog beach hotel flight tour backpacking island city roadtrip mountains camping",
    "fitness": "fitness workout yoga gym running cardio abs stretching pilates squat marathon hiit",
    "fashion": "fashion outfit haul style dress sneakers runway streetwear thrift lookbook jeans designer",
    "beauty": "beauty makeup skincare hair nails lipstick eyeliner contour perfume manicure foundation hairstyle",
    "cars": "cars engine supercar drift motorcycle racing tesla repair offroad truck horsepower dashcam",
    "animals": "animals cats dogs puppy kitten wildlife birds zoo horse safari aquarium pets",
    "movies": "movies trailer film cinema marvel actor oscars scene director sequel netflix anime",
    "diy": "diy crafts woodworking renovation gardening knitting sewing tools painting pottery upcycling plumbing",
    "finance": "finance stocks crypto bitcoin investing budget money taxes trading mortgage savings retirement",
    "kids": "kids cartoon nursery toys lego peppa baby rhymes alphabet slime disney storytime",
    "history": "history war ancient medieval documentary empire rome egypt castle revolution ww2 archaeology",
}
TOPICS: tuple[str, ...] = tuple(_VOCABULARY)
TOKENS_PER_TOPIC = 12

def topic_names(num_topics: int) -> list[str]:
    """The readable topics first, then "topic21", "topic22", ... beyond the list."""
    return list(TOPICS[:num_topics]) + [f"topic{k + 1}" for k in range(len(TOPICS), num_topics)]


def topic_tokens(topic: str) -> list[str]:
    """The search vocabulary of a topic; vocabularies of different topics are disjoint."""
    if topic in _VOCABULARY:
        return _VOCABULARY[topic].split()
    return [topic] + [f"{topic}_{k}" for k in range(1, TOKENS_PER_TOPIC)]


@dataclasses.dataclass
class SyntheticConfig:
    """Sizes and behaviour of the simulated service; round-trips through JSON via to_dict/from_dict.

    `watches_per_user` is the mean number of watches a user starts on their own (search, related,
    external, home outside the logged pages); clicked impressions add home watches on top.
    Per-user activity is lognormal with mean 1 and `activity_sigma`, and scales both watches and
    impression pages, so heavy users are heavy everywhere.
    """

    num_users: int = 5000
    num_videos: int = 5000
    num_topics: int = 20
    days: float = 60.0
    watches_per_user: float = 40.0
    impression_pages_per_user: float = 8.0
    page_size: int = 10
    seed: int = 0
    min_watches_per_user: int = 3  # so per-user held-out splits always have something to hold out
    activity_sigma: float = 1.0
    popularity_sigma: float = 2.0  # lognormal sigma of base popularity: the head/tail contrast
    topic_concentration: float = 0.15  # Dirichlet alpha per topic: small -> 2-4 dominant topics
    own_language_prob: float = 0.9
    back_catalogue_fraction: float = 0.3  # videos already uploaded at time 0
    freshness_half_life_days: float = 2.0
    freshness_floor: float = 0.05  # attention an old video keeps, relative to a brand-new one
    search_fraction: float = 0.25  # shares of organic watches by source; "home" gets the rest
    related_fraction: float = 0.35
    external_fraction: float = 0.1
    unanswered_search_fraction: float = 0.2  # searches that lead to no watch
    explore_fraction: float = 0.3  # impression slots drawn from any topic, not the user's mixture
    rewatch_prob: float = 0.05  # share of organic watches allowed to repeat an earlier one
    base_click_logit: float = -2.5

    def __post_init__(self) -> None:
        for name in ("num_users", "num_videos", "num_topics", "page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.days <= 0 or self.freshness_half_life_days <= 0:
            raise ValueError("SyntheticConfig.days and freshness_half_life_days must be > 0")
        fractions = (self.search_fraction, self.related_fraction, self.external_fraction)
        if min(fractions) < 0 or sum(fractions) > 1:
            raise ValueError(f"source fractions must be >= 0 and sum to <= 1, got {fractions}")
        if not 0 <= self.unanswered_search_fraction < 1:
            raise ValueError("SyntheticConfig.unanswered_search_fraction must be in [0, 1)")

    @classmethod
    def tiny(cls, seed: int = 0) -> "SyntheticConfig":
        """A log for unit tests: 200 users, 300 videos, 8 topics; generates in milliseconds."""
        return cls(num_users=200, num_videos=300, num_topics=8, days=30.0, watches_per_user=20.0,
                   impression_pages_per_user=4.0, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SyntheticConfig":
        return cls(**values)  # unknown keys raise TypeError: a typo should not pass silently


def generate(config: SyntheticConfig) -> EventLog:
    """Simulates the service described by `config`; the same config gives identical tables.

    A shortcut for `Simulator(config).event_log()` (`tfrs_youtube.data.simulator`), whose object
    also answers how the simulated users would respond to other pages than the logged ones.
    """
    from tfrs_youtube.data.simulator import Simulator  # the simulator imports this module

    return Simulator(config).event_log()
