"""Screenshot one section of a report, or a vector figure, for the README, in headless Chromium
(never by hand).

    python docs/screenshot.py [runs/demo/report.html] [--section 3] [--out docs/images/report.png]
    python docs/screenshot.py FIGURE.svg --out docs/images/figure.png

The section is the N-th source of the report (1-based); the default shows the bedroom run with its
attribution, as `make demo` writes it. An SVG is drawn as the browser renders it (its text is
text, set in the browser's fonts) and saved as PNG for display.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Keep the docs folder (no packages here) off the import path before importing the project.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from reports.browser import open_page  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("report", nargs="?", default="runs/demo/report.html")
    parser.add_argument("--section", type=int, default=3)
    parser.add_argument("--out", default="docs/images/report.png")
    parser.add_argument("--height", type=int, default=1400, help="clip the shot at this height")
    args = parser.parse_args()
    if args.report.endswith(".svg"):
        with open_page(args.report, width=1100) as (page, log):
            page.locator("svg").first.screenshot(path=args.out)
        print(f"wrote {args.out}")
        return
    with open_page(args.report, width=1100) as (page, log):
        section = page.locator(f"#source-{args.section}")
        box = section.bounding_box()
        if box is None:
            raise SystemExit(f"no section {args.section} in {args.report}")
        clip = {"x": box["x"], "y": box["y"], "width": box["width"],
                "height": min(box["height"], args.height)}
        page.screenshot(path=args.out, clip=clip, full_page=True)
    if log.errors or log.blocked:
        raise SystemExit(f"the page logged errors {log.errors} or requests {log.blocked}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
