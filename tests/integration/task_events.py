"""What the worker tells Flower: its task events, captured with Celery's own event receiver.

Flower builds its task list from these events: `task-received` carries the arguments it shows,
`task-succeeded` the result. Capturing them directly shows what any monitor of the fleet can
see, whoever published the task and whatever headers the producer left out.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Self

from celery import Celery

from tests.integration.harness import wait_until

# How long the receiver may take to subscribe and hear the worker's first heartbeat (sent
# every 2 s, and at once when woken): a test waits this long only when something is broken.
SUBSCRIBE_WAIT_S = 20.0

Event = dict[str, Any]


class TaskEvents:
    """Every event the fleet sends while running, kept in order of arrival."""

    def __init__(self, broker_url: str, worker_name: str) -> None:
        self.worker_name = worker_name
        self._app = Celery("event-capture", broker=broker_url, set_as_current=False)
        self._app.conf.update(accept_content=["json"], event_serializer="json")
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._receiver: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._capture, name="task-events", daemon=True)

    def start(self) -> Self:
        """Subscribe, and wait until a heartbeat of `worker_name` shows the subscription works."""
        self._thread.start()
        wait_until(
            lambda: any(
                e["type"] == "worker-heartbeat"
                and str(e.get("hostname", "")).startswith(f"{self.worker_name}@")
                for e in self.events()
            ),
            SUBSCRIBE_WAIT_S,
            f"a heartbeat of {self.worker_name}",
        )
        return self

    def stop(self) -> None:
        """Unsubscribe (the receiver looks at its stop flag every second) and close."""
        self._ready.wait(timeout=10)
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=10)
        self._app.close()

    def events(self) -> list[Event]:
        """A copy of every event so far."""
        with self._lock:
            return list(self._events)

    def of_task(self, task_id: str) -> list[Event]:
        """The events about one task, in order."""
        return [e for e in self.events() if e.get("uuid") == task_id]

    def text(self) -> str:
        """All events as one JSON text, to look for what must never be shown."""
        return json.dumps(self.events(), default=str)

    def wait_for(self, task_id: str, event_type: str, timeout_s: float) -> Event:
        """The first event of `event_type` about a task; fails the test after `timeout_s`."""
        wait_until(
            lambda: any(e["type"] == event_type for e in self.of_task(task_id)),
            timeout_s,
            f"a {event_type} event for {task_id}",
        )
        return next(e for e in self.of_task(task_id) if e["type"] == event_type)

    def _capture(self) -> None:
        with self._app.connection_for_read() as connection:
            self._receiver = self._app.events.Receiver(connection, handlers={"*": self._on_event})
            self._ready.set()
            # Woken, each worker sends a heartbeat at once rather than within 2 s.
            self._receiver.capture(limit=None, timeout=None, wakeup=True)

    def _on_event(self, event: Event) -> None:
        with self._lock:
            self._events.append(dict(event))
