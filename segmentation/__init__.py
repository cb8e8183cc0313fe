"""Segmenters and label vocabularies (the Segmenter protocol, segmentation-models-pytorch models).

Empty until the scene-world issue lands; the package exists so the layout and the dependency
direction (``analysis -> {inversion, segmentation}``) are fixed from the start.
"""
