"""Stage 7, plain Python: guardrails (normalise, then judge) and the offline captioner."""
