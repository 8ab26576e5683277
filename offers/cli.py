"""The `offers` command line. Each command is a plain function the tests call directly."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
policy_app = typer.Typer(no_args_is_help=True, help="Inspect the policy.")
features_app = typer.Typer(no_args_is_help=True, help="Build and inspect feature snapshots.")
audit_app = typer.Typer(no_args_is_help=True, help="Read the audit log.")
app.add_typer(policy_app, name="policy")
app.add_typer(features_app, name="features")
app.add_typer(audit_app, name="audit")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
