"""The size of a report and where its bytes go, and its height in headless Chromium.

    python benchmarks/report_size.py runs/demo/report.html [OTHER.html ...]

Prints, per report: the file size, the page height at 1200 px wide, whether every image decodes,
the bytes of embedded images by kind (the alt text without the image name), and how many times
the VGG16 warning appears. Used for the before/after table in docs/report.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder has files named like the packages they measure: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import re

from reports.browser import open_page


def measure(path: Path) -> None:
    html = path.read_text()
    print(f"# {path}: {path.stat().st_size / 1e6:.2f} MB")
    decoded = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    with open_page(path, width=1200) as (page, _log):
        print(f"height {page.evaluate('document.body.scrollHeight')} px; "
              f"{page.evaluate('document.images.length')} images, all decoded: "
              f"{page.evaluate(decoded)}")
    sizes: dict[str, int] = {}
    for alt, uri in re.findall(r'alt="([^"]*)" src="(data:[^"]*)"', html):
        kind = re.sub(r" of .*", "", alt)
        sizes[kind] = sizes.get(kind, 0) + len(uri)
    for kind, size in sorted(sizes.items(), key=lambda item: -item[1])[:10]:
        print(f"  {kind}: {size / 1e6:.2f} MB")
    print(f"VGG16 warning shown {html.count('VGG16 weights not found')} time(s)")


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        measure(Path(argument))
