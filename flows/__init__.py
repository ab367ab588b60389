"""The flows: composition of the tasks, every step a ``.submit()``.

Importing this package makes a flow's end not wait for Prefect's heartbeat thread
(:func:`galleryflow.core.prefect_run.end_heartbeats_without_waiting`).
"""

from galleryflow.core.prefect_run import end_heartbeats_without_waiting

end_heartbeats_without_waiting()
