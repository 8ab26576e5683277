"""Training and serving build the same feature row for the same user, offer and instant.

Serving reads history from a snapshot (as of its cutoff) and shows offers at the request's
`now`; training reads history as of shown_at and shows the offer then. So a served row is
training's row at the cutoff for history and population, and training's row at `now` for the
offer's window (days left, days since start); at now == cutoff the whole row is the same.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from serving_world import CUTOFF, NOW, World

from features.backend import connect
from features.sources import open_sources
from features.vector import FEATURE_COLUMNS, OFFER_DAYS_LEFT, OFFER_DAYS_SINCE_START
from training.point_in_time import feature_matrix

WINDOW = [FEATURE_COLUMNS.index(c) for c in (OFFER_DAYS_LEFT, OFFER_DAYS_SINCE_START)]
HISTORY = [i for i in range(len(FEATURE_COLUMNS)) if i not in WINDOW]
RUN_TIME = datetime(2025, 6, 1, 6, tzinfo=UTC)  # when the world's snapshot job ran


def _training_rows(world: World, user: str, offers, instant: pd.Timestamp) -> np.ndarray:
    sources = open_sources(world.data, None, RUN_TIME, con=connect("duckdb", threads=1))
    n = len(offers)
    return feature_matrix(sources, [user] * n, pd.Series([instant] * n), offers, 30.0)


def test_served_rows_are_training_rows_at_the_same_instant(world: World) -> None:
    scorer = world.scorer()
    state = scorer.state
    idx = np.array([state.offer_index[o] for o in world.active_offer_ids])
    offers = state.offers.take(idx)
    cutoff, now = pd.Timestamp(CUTOFF, tz="UTC"), pd.Timestamp(NOW)
    at_cutoff = _training_rows(world, "u_ok", offers, cutoff)
    at_now = _training_rows(world, "u_ok", offers, now)

    served = scorer.request_matrix(state, ["u_ok"], idx, now.value)
    np.testing.assert_array_equal(served[:, WINDOW], at_now[:, WINDOW])
    np.testing.assert_allclose(served[:, HISTORY], at_cutoff[:, HISTORY], rtol=1e-9, atol=1e-9)
    assert (served[:, WINDOW[1]] >= 0).all()  # an offer active now has started: no negative age
    # the offer-window columns moved with the clock, not with the snapshot
    np.testing.assert_allclose(
        served[:, WINDOW[1]] - at_cutoff[:, WINDOW[1]], (now - cutoff) / pd.Timedelta(days=1)
    )

    same_instant = scorer.request_matrix(state, ["u_ok"], idx, cutoff.value)
    np.testing.assert_allclose(same_instant, at_cutoff, rtol=1e-9, atol=1e-9)
