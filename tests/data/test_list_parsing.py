"""Purpose lists from Parquet take a vectorised path; it must read every list as the loop does."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.validate_parse import _parse_arrow_lists, _parse_string_list

ITEMS = st.one_of(
    st.sampled_from(["offer_ranking", " offer_ranking ", "analytics", "", " ", "a\x1fb"]),
    st.none(),
    st.text(max_size=5),
)
LISTS = st.one_of(st.none(), st.lists(ITEMS, max_size=4))


def _as_arrays(rows):
    return pd.Series([None if r is None else np.array(r, dtype=object) for r in rows], dtype=object)


@settings(max_examples=200, deadline=None)
@given(st.lists(LISTS, min_size=1, max_size=12))
def test_the_vectorised_path_reads_lists_as_the_loop_does(rows):
    fast = _parse_string_list(_as_arrays(rows))
    slow = _parse_string_list(pd.Series([None if r is None else tuple(r) for r in rows]))
    assert list(fast.values) == list(slow.values)
    assert fast.null.tolist() == slow.null.tolist()
    assert fast.bad.tolist() == slow.bad.tolist()
    assert [m.tolist() for _, m in fast.extra] == [m.tolist() for _, m in slow.extra]


def test_arrays_of_strings_take_the_vectorised_path_and_others_do_not():
    parsed = _parse_arrow_lists(
        _as_arrays([["offer_ranking", " x "], None, [], [" "], ["a", None]])
    )
    assert parsed is not None
    assert list(parsed.values) == [["offer_ranking", "x"], None, None, None, None]
    assert parsed.null.tolist() == [False, True, False, False, False]
    assert parsed.bad.tolist() == [False, False, False, False, True]
    assert parsed.extra[0][1].tolist() == [False, False, True, True, False]
    assert _parse_arrow_lists(pd.Series(['["offer_ranking"]'])) is None  # CSV text
    assert _parse_arrow_lists(_as_arrays([[1, 2]])) is None  # not strings
