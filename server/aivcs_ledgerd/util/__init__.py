"""Small helpers every layer may use; nothing here knows about runs or events."""
