"""The `offers` command line. Each command is a plain function the tests call directly."""

from __future__ import annotations

import typer

from offers.cli.common import Commands, UserError, progress_printer
from offers.cli.data import import_complete_journey_cmd, synth, validate
from offers.cli.experiments import create as experiment_create
from offers.cli.experiments import list_cmd as experiment_list
from offers.cli.experiments import report as experiment_report_cmd
from offers.cli.experiments import simulate as experiment_simulate
from offers.cli.experiments import stop as experiment_stop
from offers.cli.models import predict, promote, train
from offers.cli.privacy import audit_tail, erase_cmd, explain
from offers.cli.ranking import check_alias, check_data, expired_hint, score_batch_cmd, serve
from offers.cli.snapshots import (
    features_build,
    features_list,
    features_publish_online,
    features_show,
)
from offers.cli.tools import demo, mlflow_ui_command, ui

# The one place the command tree is put together; the commands live in the modules above
# (data, snapshots, privacy, models, ranking, tools), shared helpers in `common`.
app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, cls=Commands)
policy_app = typer.Typer(no_args_is_help=True, help="Inspect the policy.")
features_app = typer.Typer(no_args_is_help=True, help="Build and inspect feature snapshots.")
audit_app = typer.Typer(no_args_is_help=True, help="Read the audit log.")
import_app = typer.Typer(no_args_is_help=True, help="Map public datasets onto the data contract.")
app.add_typer(policy_app, name="policy")
app.add_typer(features_app, name="features")
app.add_typer(audit_app, name="audit")
app.add_typer(import_app, name="import")
experiment_app = typer.Typer(no_args_is_help=True, help="Online experiments: arms, reports.")
app.add_typer(experiment_app, name="experiment")

app.command()(validate)
app.command()(synth)
import_app.command("complete-journey")(import_complete_journey_cmd)
features_app.command("build")(features_build)
features_app.command("list")(features_list)
features_app.command("show")(features_show)
features_app.command("publish-online")(features_publish_online)
policy_app.command("explain")(explain)
app.command()(train)
app.command()(promote)
app.command()(predict)
app.command()(serve)
app.command("score-batch")(score_batch_cmd)
app.command("erase")(erase_cmd)
audit_app.command("tail")(audit_tail)
experiment_app.command("create")(experiment_create)
experiment_app.command("stop")(experiment_stop)
experiment_app.command("list")(experiment_list)
experiment_app.command("report")(experiment_report_cmd)
experiment_app.command("simulate")(experiment_simulate)
app.command()(ui)
app.command()(demo)

__all__ = [
    "UserError",
    "app",
    "audit_tail",
    "check_alias",
    "check_data",
    "demo",
    "erase_cmd",
    "experiment_create",
    "experiment_list",
    "experiment_report_cmd",
    "experiment_simulate",
    "experiment_stop",
    "expired_hint",
    "explain",
    "features_build",
    "features_list",
    "features_publish_online",
    "features_show",
    "import_complete_journey_cmd",
    "mlflow_ui_command",
    "predict",
    "progress_printer",
    "promote",
    "score_batch_cmd",
    "serve",
    "synth",
    "train",
    "ui",
    "validate",
]


def main() -> None:
    app()
