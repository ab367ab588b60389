"""galleryflow: photo sets to a published web gallery, with a person in control.

Importing the package sets a few Prefect defaults in the environment (only where
the user has not set them), because Prefect reads its settings when it is first
imported: see :mod:`galleryflow.prefect_env`.
"""

from galleryflow.prefect_env import configure_prefect_env

configure_prefect_env()

__version__ = "0.1.0"
