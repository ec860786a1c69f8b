"""SAM 2.1's memory tracker: Hiera, prompt and mask decoders, memory attention and encoder, pointers, bank, the
planner types, the public per-frame step and `Tracker`."""
