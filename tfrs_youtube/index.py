"""ScaNN's settings derived from the corpus, shared by serving and by offline evaluation."""

from __future__ import annotations

import math


def scann_settings(num_items: int, num_neighbors: int, num_leaves: int | None = None,
                   leaves_to_search: int | None = None, reorder: int | None = None) -> dict[str, int]:
    """About sqrt(N) leaves; a tenth of them searched, and at least enough to hold ten times the
    neighbours asked for, so the quantised search rarely misses a true top-k item before the best
    `reorder` candidates are re-scored exactly. Each value can be overridden."""
    leaves = num_leaves or max(2, int(round(math.sqrt(num_items))))
    to_search = leaves_to_search or min(leaves, max(8, leaves // 10, math.ceil(leaves * 10 * num_neighbors / num_items)))
    return {"num_leaves": leaves, "leaves_to_search": to_search,
            "reordering_candidates": reorder or max(2 * num_neighbors, 500)}
