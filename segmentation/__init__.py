"""Segmenters and label vocabularies: the Segmenter protocol, segmentation-models-pytorch models
(train, save, load from a local directory), IoU and Frechet Segmentation Distance.

``segmentation`` knows nothing about scenes, inversion runs or reports.
"""
