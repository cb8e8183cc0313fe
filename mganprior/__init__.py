"""mganprior: multi-code GAN prior inversion and interpretability (front door: CLI, zoo, pipelines).

Kept import-light on purpose: a ``.pth`` hook imports this package at every interpreter start-up.
"""

__version__ = "0.1.0"
