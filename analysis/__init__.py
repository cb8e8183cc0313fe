"""Interpretability analyses over inversion results: alpha-ablation difference maps, IoU
attribution of codes to classes, layer-wise, codes-count and cross-domain studies.

Empty until the attribution and studies issues land. Image metrics already live in
``inversion.metrics`` because run directories record them as images finish.
"""
