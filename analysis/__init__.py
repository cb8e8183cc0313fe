"""Interpretability analyses over inversion results.

- ``analysis.attribution``: alpha-ablation difference maps, their binarisation, IoU with a
  segmentation and the code-to-class assignment (``attribute`` -> ``AttributionResult``);
- ``analysis.attribution_files``: the attribution directory on disk (``save_attribution``,
  ``load_attribution``, ``write_csv``).

Layer-wise, codes-count and cross-domain studies come with the studies issue. Image metrics live in
``inversion.metrics`` because run directories record them as images finish.
"""
