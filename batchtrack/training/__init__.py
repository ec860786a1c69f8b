"""Training the tracker end to end on synthetic clips (design.md §5). Imported by jobs/train.py, never by model/."""
