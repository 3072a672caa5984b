"""Forecourt's vision engine: model files and their manifest, segmentation backends, car-only mattes, SAM.

Free of Flask; the server reaches it through `models.registry` (`get_segmenter`, `model_status`).
"""
