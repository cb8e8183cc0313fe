"""The embedded scene world: procedural domains with exact label maps (``scenes.render``), the
datasets and commands that trained the committed generators and segmenter, and their weights."""
