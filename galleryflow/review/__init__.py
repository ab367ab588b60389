"""The review gate's forms and answering a paused gate through the Prefect API."""
