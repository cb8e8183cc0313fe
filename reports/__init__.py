"""Figure builders (each returns a matplotlib Figure) and the self-contained HTML report.

Empty until the reports issue lands.
"""
