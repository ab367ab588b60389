"""Stage 5's models: which weights, their loading, batched scoring."""
