"""Small helpers every layer may use; nothing here knows about runs, events or gRPC."""
