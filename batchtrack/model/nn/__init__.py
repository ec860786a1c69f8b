"""Shared neural-network blocks: layers, position encodings, boxes, mask post-processing, mask IoU / NMS, window
partition and frame preprocessing."""
