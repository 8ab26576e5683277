"""The online value codec: what publish-online writes, serving reads back exactly, or refuses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from features.online.layout import OnlineValueError, columns_version, decode_user, encode_user
from features.online.stores import OnlineStoreError, redact
from features.vector import BLOCKS, PAIR_BLOCKS

WIDTHS = {name: len(cols) for name, cols in PAIR_BLOCKS.items()}
NS = "offers:20250601T000000Z-abc:0123456789ab"


@st.composite
def user_rows(draw) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows = {}
    for name, width in WIDTHS.items():
        n = draw(st.integers(0, 6))
        items = np.sort(draw(arrays(np.int64, n, elements=st.integers(0, 2**40), unique=True)))
        values = draw(arrays(np.float64, (n, width), elements=st.floats(allow_infinity=True)))
        rows[name] = (items, values)
    return rows


@settings(max_examples=60, deadline=None)
@given(user_rows())
def test_a_user_value_reads_back_bit_for_bit(rows) -> None:
    back = decode_user(encode_user(NS, rows), NS, WIDTHS)
    for name, (items, values) in rows.items():
        np.testing.assert_array_equal(back[name][0], items)
        # NaN included: compare the bytes
        assert back[name][1].tobytes() == np.ascontiguousarray(values).tobytes()


def test_a_value_of_another_namespace_is_refused() -> None:
    empty = {name: (np.empty(0, np.int64), np.empty((0, w))) for name, w in WIDTHS.items()}
    value = encode_user(NS, empty)
    with pytest.raises(OnlineValueError, match="mixed snapshots"):
        decode_user(value, NS.replace("abc", "def"), WIDTHS)
    with pytest.raises(OnlineValueError, match="trailing bytes"):
        decode_user(value + b"\0", NS, WIDTHS)
    with pytest.raises(OnlineValueError, match="not a user value"):
        decode_user(b"JUNK" + value[4:], NS, WIDTHS)


def test_columns_version_follows_names_and_order() -> None:
    assert columns_version() == columns_version(dict(BLOCKS))
    renamed = {**BLOCKS, "user_": (*BLOCKS["user_"], "u_new_feature")}
    assert columns_version(renamed) != columns_version()
    reordered = {**BLOCKS, "user_": tuple(reversed(BLOCKS["user_"]))}
    assert columns_version(reordered) != columns_version()


def test_urls_lose_their_password_and_other_schemes_are_refused() -> None:
    assert redact("redis://user:pw@host:6380/3") == "redis://host:6380/3"
    with pytest.raises(OnlineStoreError, match="not a redis://"):
        redact("http://user:pw@host/")
