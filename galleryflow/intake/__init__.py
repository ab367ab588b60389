"""Intake folders (queue/, urgent/) and the demo's sample sets."""
