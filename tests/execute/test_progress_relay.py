"""Progress from elsewhere (worker processes, Dask workers) replayed on the client's display."""

from __future__ import annotations

from pipeline.execute.progress_relay import ProgressReplay
from tests.stages.test_side_by_side import RecordingProgress


def test_bars_open_advance_and_close_and_notes_pass_through() -> None:
    shown = RecordingProgress()
    replay = ProgressReplay(shown)
    replay.handle(("open", "task-1:1", "training on worker 0", 10))
    replay.handle(("advance", "task-1:1", 4))
    replay.handle(("note", "[worker 0] epoch 1"))
    replay.handle(("close", "task-1:1"))
    assert shown.events == [
        ("open", "training on worker 0", 10), ("advance", "training on worker 0", 4),
        ("note", "[worker 0] epoch 1"), ("close", "training on worker 0"),
    ]


def test_a_task_that_ended_without_closing_its_bars_has_them_closed_and_later_events_ignored() -> None:
    shown = RecordingProgress()
    replay = ProgressReplay(shown)
    replay.handle(("open", "task-1:1", "training", None))
    replay.handle(("open", "task-2:1", "other", None))
    replay.close_matching("task-1")  # its worker died: nobody will close it
    replay.handle(("open", "task-1:2", "late", None))  # an event still in flight from the dead task
    replay.handle(("advance", "task-1:1", 1))
    assert ("close", "training") in shown.events
    assert ("open", "late", None) not in shown.events
    assert ("close", "other") not in shown.events, "another task's bar stays open"
