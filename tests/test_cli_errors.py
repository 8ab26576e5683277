"""What a newcomer meets on the command line: one named line for a mistake, exit code 2;
flags that follow the environment the README names; tables that keep their names at 80
columns; counts printed as counts."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from offers.cli import app, expired_hint
from offers.tables import metrics_table
from training.report import markdown_table

MAX_LINES = 4


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("OFFERS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    return home


def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and len(result.output.splitlines()) <= MAX_LINES, result.output
    return errors[0]


def test_train_config_typo(empty_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("num_leavs = 7\n")
    line = _one_line_error(["train", "--data", str(tmp_path), "--config", str(config)])
    assert "num_leavs" in line and "num_leaves" in line and "fix the file" in line


def test_features_show_unknown_snapshot(empty_home: Path) -> None:
    line = _one_line_error(["features", "show", "nosuch"])
    assert "no snapshot 'nosuch'" in line and "offers features build" in line


def test_serve_without_a_champion(
    empty_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFERS_API_TOKENS", "secret")
    line = _one_line_error(["serve", "--data", str(tmp_path), "--port", "9"])
    assert "no model version has the alias 'champion'" in line
    assert "offers train" in line and "offers promote" in line


def test_promote_with_nothing_to_promote(empty_home: Path) -> None:
    line = _one_line_error(["promote"])
    assert "challenger" in line and "offers train" in line


def test_a_bug_still_shows_its_traceback() -> None:
    """KeyError is a LookupError, but it means a bug: it must not pass for a user's mistake."""
    from offers.cli.common import is_expected as _expected

    assert not _expected(KeyError("x")) and _expected(LookupError("no champion"))


@pytest.mark.parametrize("command", ["serve", "score-batch"])
def test_replay_mode_follows_the_environment(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OFFERS_ALLOW_PAST_NOW=1 (the README's replay mode) is not overwritten by the flag's default."""
    cmd = typer.main.get_command(app).commands[command]
    args = ["--data", str(tmp_path)]
    if command == "score-batch":
        args += ["--out", str(tmp_path / "top.parquet")]
    monkeypatch.setenv("OFFERS_ALLOW_PAST_NOW", "1")
    assert cmd.make_context(command, list(args)).params["allow_past_now"] is True
    monkeypatch.setenv("OFFERS_ALLOW_PAST_NOW", "0")
    assert cmd.make_context(command, list(args)).params["allow_past_now"] is False
    assert cmd.make_context(command, [*args, "--allow-past-now"]).params["allow_past_now"] is True


def _render(renderable: object, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def test_metrics_table_keeps_every_name_whole_at_80_columns() -> None:
    scorers = ["model", "random", "popularity", "affinity", "logistic", "oracle"]
    metrics = ["ndcg_at_5", "ndcg_at_10", "map_at_10", "recall_at_5", "recall_at_10", "roc_auc"]
    frame = pd.DataFrame(
        [[0.649 + i / 100 for i in range(len(metrics))] + [1234.0] for _ in scorers],
        index=scorers,
        columns=[*metrics, "n_slates"],
    )
    text = _render(metrics_table(frame))
    assert max(len(line) for line in text.splitlines()) <= 80
    for name in [*scorers, *metrics, "n_slates"]:
        assert name in text
    assert "…" not in text and "@" not in text
    assert "0.6490" in text and "1,234" in text and "1,234.0000" not in text


def test_features_list_keeps_snapshot_ids_whole_at_80_columns(
    empty_home: Path,
) -> None:
    """Two snapshots of one cutoff differ only at the end of their ids."""
    import json

    features = empty_home / "features"
    ids = ["20251201T000000Z-4da1f2aa5e", "20251201T000000Z-9b07c3d2f1"]
    for n, snapshot_id in enumerate(ids):
        (features / snapshot_id).mkdir(parents=True)
        manifest = {
            "snapshot_id": snapshot_id,
            "cutoff": "2025-12-01T00:00:00+00:00",
            "built_at": f"2026-01-0{n + 1}T04:33:28.226349+00:00",
            "row_counts": {"user": 154},
            "policy_version": "p1-0448211115cf",
        }
        (features / snapshot_id / "manifest.json").write_text(json.dumps(manifest))
    (features / "CURRENT").write_text(ids[1])
    result = CliRunner().invoke(app, ["features", "list"])
    assert result.exit_code == 0, result.output
    assert f"* {ids[1]}" in result.output and ids[0] in result.output
    assert "…" not in result.output


def test_model_card_counts_are_integers() -> None:
    splits = pd.DataFrame(
        {"n_rows": [1200.0, 0.0], "n_slates": [100.0, 0.0], "share": [0.5, 0.25]},
        index=["train", "test"],
    )
    assert markdown_table(splits).splitlines()[2:] == [
        "| train | 1,200 | 100 | 0.5000 |",
        "| test | 0 | 0 | 0.2500 |",
    ]


def test_score_batch_says_why_most_users_were_denied() -> None:
    hint = expired_hint(300, {"CONSENT_EXPIRED": 227, "NO_CONSENT": 30}, None)
    assert hint is not None and "76%" in hint and "--now" in hint and "--allow-past-now" in hint
    assert expired_hint(300, {"CONSENT_EXPIRED": 100}, None) is None  # a minority: no hint
    assert expired_hint(0, {}, None) is None


def test_erase_receipt_says_servers_deny_without_a_reload(tmp_path: Path) -> None:
    from serving.erase import erase

    notes = {s.store: s.note for s in erase(tmp_path / "home", None, "u1").stores}
    online = notes["online copy (running servers)"]
    assert "OFFERS_RELOAD_WATCH_S" in online and "no reload or restart" in online


def test_the_demo_ends_with_commands_for_a_new_shell(tmp_path: Path) -> None:
    from offers.demo import next_steps

    text = next_steps(tmp_path / ".offers", tmp_path / ".offers" / "demo-data", "u000001")
    assert ". .venv/bin/activate" in text and f"export OFFERS_HOME={tmp_path / '.offers'}" in text
    serve = next(line for line in text.splitlines() if "offers serve" in line)
    assert "--data" in serve and "--allow-past-now" in serve  # replay: synthetic consents lapsed
