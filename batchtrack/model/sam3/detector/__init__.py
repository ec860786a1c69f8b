"""SAM 3's detector: fusion encoder, DETR decoder, dot-product scoring, segmentation head, geometry encoder."""
