"""Shared neural-network blocks: layers, position encodings, boxes, mask post-processing."""
