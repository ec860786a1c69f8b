"""How tracks start without prompts: automatic mode, concept mode, detection-to-track association and track planning."""
