"""Redraw the figures of existing runs, studies, attributions and edits (in other formats or at
another print width) from what they stored, without recomputing any inversion, attribution or
edit."""

from __future__ import annotations

from pathlib import Path

from analysis.attribution_files import AttributionDirectory
from analysis.edit_files import EditDirectory
from analysis.study_files import StudyDirectory
from inversion.rundir import RunDirectory
from mganprior.attribution import summary_figures
from mganprior.core.errors import InputError
from mganprior.editing import edit_figures
from mganprior.studies import write_study_figures
from reports.figures import attribution_grid, save_figure
from reports.output import FigureOutput


def redraw_attribution(directory: AttributionDirectory, output: FigureOutput) -> int:
    """The summary figures and every image figure the attribution has; returns the count."""
    summary_figures(directory, directory.aggregate(), output)
    drawn = {path.stem for path in (directory.path / "figures" / "images").glob("*.png")}
    result = directory.load()
    for i, name in enumerate(result.names):
        if name in drawn:
            save_figure(attribution_grid(result, i), directory.image_figure(name), output)
    return 2 + len(drawn & set(result.names))


def redraw_edit(directory: EditDirectory, output: FigureOutput) -> int:
    result = directory.load()
    target = directory.meta().get("target")
    edit_figures(directory, result, target, output)
    return 2 * len(result.names) + (0 if result.fractions is None else 1 + (target is not None))


def redraw_study(study: StudyDirectory, output: FigureOutput) -> int:
    record = study.study()
    tables = study.rebuild_tables(study.summary().get("warnings", []))
    write_study_figures(study, record["kind"], list(record["tasks"]),
                        len(set(record["codes"])) > 1, study.cells(), tables.rows,
                        tables.attribution, [image["name"] for image in record["images"]],
                        output)
    return len(list(study.path.glob("figures/*.png")))


def redraw(path: str | Path, output: FigureOutput) -> int:
    """Redraw the figures under ``path`` (a study, a run with its attribution and edits, an
    attribution or an edit directory); returns how many figures were drawn."""
    path = Path(path)
    if StudyDirectory(path).exists():
        return redraw_study(StudyDirectory(path), output)
    if AttributionDirectory(path).exists():
        return redraw_attribution(AttributionDirectory(path), output)
    if EditDirectory(path).exists():
        return redraw_edit(EditDirectory(path), output)
    if not RunDirectory(path).is_run():
        raise InputError(f"{path} is not a run, study, attribution or edit directory",
                         field="paths")
    count = 0
    if AttributionDirectory(path / "attribution").exists():
        count += redraw_attribution(AttributionDirectory(path / "attribution"), output)
    for folder in sorted((path / "edits").glob("*")):
        if EditDirectory(folder).exists():
            count += redraw_edit(EditDirectory(folder), output)
    return count
