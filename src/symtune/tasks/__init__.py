"""The task catalogue: declarative specs and their data sources."""

from .catalogue import get_task, is_local, load_catalogue, select_tasks
from .sources import Rows, available_splits, load_rows, local_dir
from .spec import HubSource, TaskError, TaskSpec, read_spec_file, spec_from_dict

__all__ = [
    "HubSource",
    "Rows",
    "TaskError",
    "TaskSpec",
    "available_splits",
    "get_task",
    "is_local",
    "load_catalogue",
    "load_rows",
    "local_dir",
    "read_spec_file",
    "select_tasks",
    "spec_from_dict",
]
