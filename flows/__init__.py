"""The flows: composition of the tasks, every step a ``.submit()``.

Importing this package makes a flow's end not wait for Prefect's heartbeat thread
(:func:`galleryflow.core.prefect_run.end_heartbeats_without_waiting`), and the
process reuse its photos' freed buffers (:mod:`galleryflow.core.memory`: a
deployment's flow run is started by Prefect, not by the CLI, which does the same).
"""

from galleryflow.core.memory import reuse_freed_memory
from galleryflow.core.prefect_run import end_heartbeats_without_waiting

end_heartbeats_without_waiting()
reuse_freed_memory()
