"""Batch jobs: presets and operations, outputs, job status."""
