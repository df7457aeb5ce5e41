"""``smtpx spool shape``: the queue by destination and age as a table, like Postfix's
``qshape``; the counting is :mod:`smtpx.spool.shape`'s (the web console draws it too)."""

from __future__ import annotations

from rich.table import Table

from smtpx.spool.shape import Shape

__all__ = ["shape_table"]


def shape_table(result: Shape) -> Table:
    """The shape as a table: domains left, counts right-aligned under T and each bucket."""
    # No borders, one space between columns, like qshape: ten buckets fit 80 columns.
    table = Table(box=None, padding=(0, 1), collapse_padding=True, pad_edge=False)
    table.header_style = "bold"
    table.add_column("domain", overflow="fold", ratio=1, min_width=12)
    for label in ["T", *result.labels]:
        table.add_column(label, justify="right", no_wrap=True)
    for domain, counts in result.rows:
        style = "bold" if domain == "TOTAL" else ""
        table.add_row(domain, *(str(n) for n in counts), style=style)
    return table
