"""Which model a name means and how it is built: checkpoint reading (Meta's key names) and `build_tracker`."""
