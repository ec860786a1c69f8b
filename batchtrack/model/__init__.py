"""The tracker: a SAM 2.1-compatible memory tracker built from one module per concept."""
