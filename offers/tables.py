"""Terminal tables that keep their key column whole on an 80-column terminal.

Rich shrinks every column of a table wider than the terminal and cuts cells with an ellipsis:
`ndcg_a…`, `popula…`, snapshot ids that cannot be told apart. Here the key column (the id or
name a reader looks for) never wraps; the other columns fold onto more lines instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table

from training.report import MODEL, is_count


def key_table(key: str, *columns: str, title: str | None = None) -> Table:
    """A table whose first column is shown whole; the others fold rather than truncate."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(key, no_wrap=True)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def cell(metric: str, value: Any) -> str:
    """A count as an integer with separators, a metric with four decimals."""
    return f"{value:,.0f}" if is_count(metric) else f"{value:.4f}"


def metrics_table(metrics: Any, title: str | None = None) -> Table:
    """One row per metric (the MLflow name, e.g. `ndcg_at_10`), one column per scorer.

    Metrics as rows keep the table under 80 columns with every name whole: the scorers'
    names are short, the metric names are not.
    """
    scorers: Sequence[str] = [str(s) for s in metrics.index]
    table = key_table("metric", *scorers, title=title)
    for column in table.columns[1:]:
        column.justify = "right"
        if column.header == MODEL:
            column.header = f"[bold]{MODEL}[/bold]"
    for metric in metrics.columns:
        table.add_row(str(metric), *[cell(str(metric), v) for v in metrics[metric]])
    return table
