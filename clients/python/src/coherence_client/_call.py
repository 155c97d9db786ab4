"""How every call reaches the sidecar: under a deadline, with a failure raised as an exception
that names the sidecar's address (and keeps the gRPC error as its cause).

The typed clients of the four services share one channel and one `Target`, so an app that gets
`Unavailable` from any of them knows which sidecar.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Iterator, TypeVar

import grpc

from .errors import DeadlineExceeded, from_rpc_error

Message = TypeVar("Message")
Event = TypeVar("Event")


class Target:
    """The sidecar a client talks to (for error messages) and the deadline of each call."""

    def __init__(self, address: str, timeout: float):
        self.address = address
        self.timeout = timeout

    def unary(self, method: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        """One call under the deadline (`timeout` overrides the client's)."""
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.address) from error

    def stream(
        self, method: Callable[..., Any], request: Any, mapper: Callable[[Message], Event | None]
    ) -> "Stream[Event]":
        """Opens a server stream and waits, within the deadline, for the response headers: the
        sidecar sends them once the stream is live (for Watch: subscribed, so every later bump
        reaches it). The stream itself has no deadline."""
        call = method(request)
        headers = threading.Event()

        def wait_for_headers() -> None:
            try:
                call.initial_metadata()
            finally:
                headers.set()

        threading.Thread(target=wait_for_headers, name="coherence-headers", daemon=True).start()
        if not headers.wait(self.timeout):
            call.cancel()
            raise DeadlineExceeded(
                f"the sidecar at {self.address} did not open the stream within {self.timeout} s",
                address=self.address,
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                details="no response headers",
            )
        if call.done() and call.code() != grpc.StatusCode.OK:
            raise from_rpc_error(call, self.address)
        return Stream(call, self.address, mapper)


class Stream(Generic[Event]):
    """The events of one server stream: iterate it; `cancel()` (or leaving a `with` block) ends
    it. Iteration ends when the sidecar ends the stream; an error status is raised as the
    package's exception. Messages of a kind this client does not know (a newer sidecar) are
    skipped."""

    def __init__(self, call: Any, address: str, mapper: Callable[[Any], Event | None]):
        self._call = call
        self._address = address
        self._mapper = mapper
        self._cancelled = False

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while True:
            try:
                message = next(self._call)
            except grpc.RpcError as error:
                if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:
                    raise StopIteration from None
                raise from_rpc_error(error, self._address) from error
            event = self._mapper(message)
            if event is not None:
                return event

    def cancel(self) -> None:
        """Ends the stream (iteration then stops)."""
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> "Stream[Event]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __repr__(self) -> str:
        return f"Stream(sidecar={self._address!r})"


def millis(seconds: float) -> int:
    """Whole milliseconds for a proto field (a positive duration is at least 1 ms)."""
    if seconds <= 0:
        return 0
    return max(1, round(seconds * 1000))
