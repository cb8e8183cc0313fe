"""Figure builders (``reports.figures``: each returns a matplotlib Figure) and, with the reports
issue, the self-contained HTML report."""
