"""Trainers: the PGGAN-architecture GAN (``training.gan``) and the segmentation-models-pytorch
segmenter (``training.segmenter``), sharing one resumable step loop (``training.loop``).

They live apart from ``inversion`` (which inverts, and never trains) and from ``segmentation``
(which segments); both are generic, and ``scenes`` feeds them rendered data.
"""
