"""SAM 3's parts: the PE ViT trunk and dual neck, the text encoder, the detector, and `ConceptTracker`."""
