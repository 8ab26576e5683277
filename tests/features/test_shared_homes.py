from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.instants import epoch_ns, instant_ns


def test_one_and_many_agree_with_pandas_on_utc_and_offsets():
    t = datetime(2025, 6, 10, 12, 0, 0, 123456, tzinfo=UTC)
    plus2 = t.astimezone(timezone(timedelta(hours=2)))
    naive = t.replace(tzinfo=None)
    assert instant_ns(t) == instant_ns(plus2) == instant_ns(naive) == 1749556800123456000
    got = epoch_ns(pd.Series([t, plus2]))
    assert got.dtype == np.int64 and got.tolist() == [1749556800123456000] * 2
    assert epoch_ns([naive]).tolist() == [1749556800123456000]


@settings(max_examples=300, deadline=None)
@given(
    t=st.datetimes(
        min_value=datetime(1678, 1, 1),
        max_value=datetime(2261, 12, 31),
        timezones=st.one_of(st.none(), st.timezones()),
    )
)
def test_a_datetime_converts_to_the_same_nanoseconds_as_through_pandas(t: datetime) -> None:
    """instant_ns' integer path for datetimes vs pandas (naive = UTC), any zone, DST folds."""
    stamp = pd.Timestamp(t)
    expected = int((stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).value)
    assert instant_ns(t) == expected
    assert instant_ns(stamp) == expected  # a Timestamp (nanoseconds) takes the pandas path


def test_home_resolution_argument_then_environment_then_default(tmp_path, monkeypatch):
    from features.home import DEFAULT_HOME, HOME_ENV, resolve_home

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert resolve_home() == tmp_path / DEFAULT_HOME
    monkeypatch.setenv(HOME_ENV, "env-home")
    assert resolve_home() == tmp_path / "env-home"
    assert resolve_home(tmp_path / "given") == tmp_path / "given"
