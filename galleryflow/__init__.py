"""galleryflow: photo sets to a published web gallery, with a person in control.

Layers (docs/ARCHITECTURE.md): ``galleryflow.core`` at the bottom, ``galleryflow.db``,
the domain packages (imaging, scoring, captioning, review, publishing, batch,
intake), then ``tasks/`` and ``flows/``, and ``galleryflow.app`` (the entry points)
on top; ``lint-imports`` keeps it so.

Importing the package fills in a few Prefect defaults (only where the user has set
none), in either import order: see :mod:`galleryflow.core.prefect_env`.
"""

from galleryflow.core.prefect_env import configure_prefect_env

configure_prefect_env()

__version__ = "0.1.0"
