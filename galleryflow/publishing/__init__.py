"""Publishing, plain Python: web derivatives and their metadata."""
