"""What a saved figure becomes (formats, print width): light to import, so that the command
line can offer the choices without loading matplotlib."""

from __future__ import annotations

from dataclasses import dataclass

from mganprior.core.errors import InputError

FIGURE_FORMATS = ("png", "pdf", "svg")
COLUMN_WIDTHS = {"single": 3.3, "double": 6.9}  # inches: one and two columns of a paper


def parse_formats(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"png,pdf,svg"`` (or a sequence) as a tuple of known formats; PNG is always written (the
    report reads it)."""
    parts = [p.strip().lower() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    unknown = [p for p in parts if p not in FIGURE_FORMATS]
    if unknown or not all(parts):
        raise InputError(f"figure_formats {spec!r}: choose from {', '.join(FIGURE_FORMATS)}, "
                         "comma-separated", field="figure_formats")
    return tuple(dict.fromkeys(["png", *parts]))


def parse_width(spec: str | float | None) -> str | float | None:
    """``single``, ``double`` or a number of inches (a string from the command line)."""
    if isinstance(spec, str) and spec not in COLUMN_WIDTHS:
        try:
            return float(spec)
        except ValueError:
            raise InputError(f"figure_width must be single, double or inches, got {spec!r}",
                             field="figure_width") from None
    return spec


@dataclass(frozen=True)
class FigureOutput:
    """Which files a saved figure becomes: ``formats`` (PNG always; PDF and SVG on request) and
    the print ``width`` of the vector files (``single`` 3.3 in, ``double`` 6.9 in, or inches;
    None: the figure's own size). The PNG keeps the figure's own size for the report."""

    formats: tuple[str, ...] = ("png",)
    width: str | float | None = "double"

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        width = parse_width(self.width)
        if width is not None and width not in COLUMN_WIDTHS and (
                isinstance(width, bool) or not isinstance(width, (int, float))
                or not 1 <= width <= 20):
            raise InputError(f"figure_width must be single, double or inches in [1, 20], got "
                             f"{self.width!r}", field="figure_width")
        object.__setattr__(self, "width", width)

    @property
    def inches(self) -> float | None:
        if self.width is None:
            return None
        return COLUMN_WIDTHS[self.width] if isinstance(self.width, str) else float(self.width)
