"""Tasks: what a model is trained to output, registered by name where each is defined::

    @TASKS.register("classification")
    class Classification(Task): ...

A task knows its metrics, whether its model generates, how its predictions read and the
pipeline that serves it; the modality turns raw examples into model inputs (and, for tasks
of one modality only, the task brings that part too). Every module of this package is
imported here, so a new task is one new file.
"""

import importlib
import pkgutil

from tlhub.tasks.base import TASKS, Task, get_task

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Task", "get_task"]
