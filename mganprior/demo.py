"""``mganprior demo``: the whole mission on a fresh machine (no network, CPU is enough).

1. DigiFace faces (samples of the real DCGAN prior): multi-code vs single-code inversion.
2. Rendered bedrooms inverted with ``bedroom-pggan64`` and with ``bedroom-stylegan2-64``, codes
   attributed to classes with ``scenes-segmenter64``.
3. A small layer-wise study (inversion, colorization, inpainting) on the bedroom prior.
4. The cross-domain experiment: bedrooms through the face, church, conference and bedroom priors
   (the bedroom PGGAN and the bedroom StyleGAN2).
5. Semantic edits: the DigiFace DCGAN's first SeFa direction applied to the inverted faces, and an
   InterFaceGAN boundary for "more bed" (trained on the bedroom PGGAN, scored by the scene
   segmenter) applied to the inverted bedrooms, all codes together and one code at a time.
6. One self-contained report, ``OUT/report.html``.

Settings are reduced so it all fits in about 10 minutes on 2 CPU cores; :data:`FULL` says what
the full-quality commands are. Rerunning resumes: finished parts are not recomputed. Steps whose
models are not installed (the DigiFace faces come from an optional package) are skipped, each
with one line naming what is missing and the ``pip install`` that adds it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from analysis.edit_files import EditDirectory
from analysis.editing import EditSettings
from inversion.images import load_images, save_png
from inversion.losses import LPIPSStatus, PerceptualStatus, load_lpips, load_perceptual
from inversion.options import TuneSettings
from inversion.recipes import get_recipe
from inversion.runs import RunSettings, run_inversion
from inversion.tasks import Inversion
from mganprior.attribution import SegmentationChoice, attribute_run
from mganprior.editing import edit_run, find_directions
from mganprior.studies import CROSS_DOMAIN_PRIORS, StudySpec, default_images, run_study
from mganprior.zoo import LoadedGenerator, load_generator, load_segmenter, missing_generators
from reports.html import write_report

DEMO_SEED = 2026


@dataclass(frozen=True)
class DemoScale:
    """How much work each part does."""

    faces: int = 4
    face_iterations: int = 200
    bedrooms: int = 4
    bedroom_iterations: int = 150
    study_images: int = 2
    study_iterations: int = 40
    study_layers: str = "2,4,6,8"
    cross_codes: int = 10
    cross_iterations: int = 40
    boundary_samples: int = 2000
    edit_steps: int = 7
    edit_code_sets: str = "all,each"


DEFAULT = DemoScale()
TINY = DemoScale(faces=2, face_iterations=3, bedrooms=2, bedroom_iterations=3, study_images=1,
                 study_iterations=2, study_layers="2", cross_codes=2, cross_iterations=2,
                 boundary_samples=200, edit_steps=3, edit_code_sets="all,0")

FULL = """full-quality versions of each part (GPU recommended):
  mganprior invert --generator digiface-dcgan64 --images FACES --out runs/faces
  mganprior invert --generator digiface-dcgan64 --images FACES --iterations 500 --tune 500 \\
    --out runs/faces-tuned
  mganprior invert --generator bedroom-pggan64 --images BEDROOMS --out runs/bed && \\
    mganprior attribute runs/bed --segmenter scenes-segmenter64
  mganprior invert --generator bedroom-stylegan2-64 --images BEDROOMS --out runs/bed-sg2 && \\
    mganprior attribute runs/bed-sg2 --segmenter scenes-segmenter64
  mganprior layers --generator bedroom-pggan64 --count 8 --segmenter scenes-segmenter64 \\
    --out runs/layers
  mganprior cross-domain --count 8 --out runs/cross-domain
  mganprior directions sefa --generator digiface-dcgan64 --out dirs/faces && \\
    mganprior edit runs/faces --direction dirs/faces/sefa_00.npy
  mganprior directions interfacegan --generator bedroom-pggan64 --attribute class:bed \\
    --segmenter scenes-segmenter64 --out dirs/bed && \\
    mganprior edit runs/bed --direction dirs/bed/class_bed.npy --segmenter scenes-segmenter64 \\
    --target bed
  mganprior report runs/faces runs/bed runs/bed-sg2 runs/layers runs/cross-domain \\
    --out report.html"""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _StepClock:
    """Announces each step and keeps when it began, for the timing table printed at the end."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def __call__(self, message: str) -> None:
        self.marks.append((message, time.perf_counter()))
        _say(message)

    def table(self, finished: float) -> str:
        ends = [start for _, start in self.marks[1:]] + [finished]
        return "\n".join(f"  {end - start:6.1f} s  {message}"
                         for (message, start), end in zip(self.marks, ends, strict=True))


def _faces(out: Path, device: str | None, progress: bool, scale: DemoScale,
           step: _StepClock, perceptual: PerceptualStatus, lpips: LPIPSStatus
           ) -> LoadedGenerator:
    """Step 1: DigiFace samples inverted with 20 codes, with one, and with 20 codes for half
    the iterations and then the generator tuned for the other half."""
    faces = load_generator("digiface-dcgan64", device=device)
    face_folder = out / "inputs" / "faces"
    face_folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(faces.generator.sample(scale.faces, seed=DEMO_SEED).cpu()):
        save_png(image, face_folder / f"face{i}.png")
    face_images = load_images([face_folder], faces.generator.resolution)
    multi = get_recipe("adam", "inversion").with_overrides(iterations=scale.face_iterations)
    half = scale.face_iterations // 2  # the tuned run: the same iterations in all
    untuned = TuneSettings()
    runs = {"faces-multi-code": (multi, untuned),
            "faces-single-code": (multi.with_overrides(codes=1, layer=0), untuned),
            "faces-tuned": (multi.with_overrides(iterations=half),
                            TuneSettings(tune=scale.face_iterations - half))}
    for folder, (recipe, tune) in runs.items():
        tuned = f", then {tune.tune} steps tuning the generator" if tune.enabled else ""
        step(f"demo 1/6: {folder} ({recipe.codes} codes, {recipe.iterations} iterations"
             f"{tuned})")
        settings = RunSettings(faces.generator, faces.info, Inversion(), recipe, perceptual,
                               lpips, seed=0, batch_size=scale.faces, progress=progress,
                               tune=tune)
        run_inversion(settings, face_images, out / folder,
                      config_extra={"command": "mganprior demo"}, log=lambda _m: None)
    return faces


def run_demo(out: Path, device: str | None = None, progress: bool = True,
             scale: DemoScale = DEFAULT) -> Path:
    started = time.perf_counter()
    step = _StepClock()
    out.mkdir(parents=True, exist_ok=True)
    perceptual, lpips = load_perceptual("vgg16"), load_lpips()
    for note in (perceptual.note, lpips.note):
        if note:
            _say(note)

    # 1. faces through the real DigiFace prior: multi-code vs single-code
    missing = missing_generators(["digiface-dcgan64"])
    faces = None
    if missing:
        _say(f"skipped: the face steps (1/6, the face prior of 4/6, the face edit of 5/6): "
             f"{missing['digiface-dcgan64']}")
    else:
        faces = _faces(out, device, progress, scale, step, perceptual, lpips)

    # 2. bedrooms through the bedroom prior, codes attributed to classes
    bedroom = load_generator("bedroom-pggan64", device=device)
    bedroom_folder, _ = default_images("bedroom-pggan64", bedroom, scale.bedrooms,
                                       out / "inputs" / "bedrooms")
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=scale.bedroom_iterations)
    for folder, name in (("bedrooms", "bedroom-pggan64"),
                         ("bedrooms-stylegan2", "bedroom-stylegan2-64")):
        step(f"demo 2/6: {scale.bedrooms} bedrooms with {name}, then attribution")
        prior = bedroom if name == "bedroom-pggan64" else load_generator(name, device=device)
        settings = RunSettings(prior.generator, prior.info, Inversion(), recipe, perceptual,
                               lpips, seed=0, batch_size=scale.bedrooms, progress=progress)
        run_inversion(settings, load_images([bedroom_folder], prior.generator.resolution),
                      out / folder, config_extra={"command": "mganprior demo"},
                      log=lambda _m: None)
        attribute_run(out / folder, SegmentationChoice(segmenter="scenes-segmenter64"),
                      device=device, progress=progress, log=lambda _m: None)

    # 3. layer-wise study, 4. cross-domain
    step(f"demo 3/6: layer study (layers {scale.study_layers}, 3 tasks)")
    study_images = sorted(bedroom_folder.glob("*.png"))[:scale.study_images]
    run_study(StudySpec(kind="layers", generators=["bedroom-pggan64"],
                        tasks=["inversion", "colorization", "inpainting"],
                        layers=scale.study_layers, iterations=scale.study_iterations,
                        segmenter="scenes-segmenter64", attribution_figures=1),
              study_images, out / "layers", device=device, progress=progress,
              log=lambda _m: None)
    step("demo 4/6: cross-domain, bedrooms through five priors at every layer")
    run_study(StudySpec(kind="cross-domain",
                        generators=[name for name in CROSS_DOMAIN_PRIORS if name not in missing],
                        codes=[scale.cross_codes], iterations=scale.cross_iterations),
              study_images, out / "cross-domain", device=device, progress=progress,
              log=lambda _m: None)

    step("demo 5/6: edits along a SeFa direction (faces) and a trained boundary (bedrooms)")
    settings = EditSettings(steps=scale.edit_steps, code_sets=scale.edit_code_sets)
    face_direction = out / "directions" / "faces" / "sefa_00.npy"
    if faces is not None and not face_direction.is_file():
        find_directions("sefa", faces, face_direction.parent, count=3)
    if faces is not None and not EditDirectory(out / "faces-multi-code" / "edits" /
                                               "sefa_00").exists():
        edit_run(out / "faces-multi-code", face_direction, settings, device=device,
                 progress=progress, log=lambda _m: None)
    bed_direction = out / "directions" / "bedrooms" / "class_bed.npy"
    if not bed_direction.is_file():
        segmenter = load_segmenter("scenes-segmenter64", device=bedroom.generator.device)
        find_directions("interfacegan", bedroom, bed_direction.parent, attribute="class:bed",
                        segmenter=segmenter, samples=scale.boundary_samples, fraction=0.05,
                        seed=DEMO_SEED)
    if not EditDirectory(out / "bedrooms" / "edits" / "class_bed").exists():
        edit_run(out / "bedrooms", bed_direction, settings, segmenter="scenes-segmenter64",
                 target="bed", device=device, progress=progress, log=lambda _m: None)

    step("demo 6/6: report")
    sections = ("faces-multi-code", "faces-single-code", "faces-tuned", "bedrooms",
                "bedrooms-stylegan2",
                "layers", "cross-domain")
    report = write_report([out / name for name in sections if (out / name).is_dir()],
                          out / "report.html", title="mganprior demo report")
    finished = time.perf_counter()
    print(f"\ndemo finished in {(finished - started) / 60:.1f} min (reduced settings):")
    print(step.table(finished))
    print(FULL)
    print(f"\nreport: {report.resolve()}")
    return report
