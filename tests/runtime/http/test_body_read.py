"""Reading a request body the way hypercorn's trio worker hands it over: a trio memory channel's ``receive``.

The app takes what the channel holds already without arming a timeout
(``app._ready``); whatever is still on its way is awaited within
``server.read-timeout``. These tests drive both halves with such a channel:
the answers, limits and timeouts are those of a plain ``receive`` callable.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from runtime.http.app import _ready

from .conftest import CONFIG, api, pipeline_yaml

PATH = "/v1/pipelines/app/builds"


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": PATH, "raw_path": PATH.encode(), "query_string": b"",
            "headers": [(b"content-type", b"application/json"), *headers]}  # fmt: skip


def _part(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


class _Answer:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def body(self) -> Any:
        return msgspec.json.decode(self.messages[1]["body"])


@pytest.mark.trio
@pytest.mark.parametrize("parts", [[b'{"variables": {"X": "1"}}'], [b'{"variables"', b': {"X": ', b'"1"}}', b""]])
async def test_a_body_queued_already_is_read_whole(autojump_clock: trio.testing.MockClock, parts: list[bytes]) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml(variables="{X: '0'}"))
        sender, receiver = trio.open_memory_channel[dict[str, Any]](10)
        for index, part in enumerate(parts):
            sender.send_nowait(_part(part, more=index < len(parts) - 1))
        answer = _Answer()
        await a.rt.asgi_app(_scope(), receiver.receive, answer.send)
        assert answer.status == 201, answer.body
        assert answer.body["variables"] == {"X": "1"}


@pytest.mark.trio
async def test_a_body_as_long_as_its_content_length_is_whole(autojump_clock: trio.testing.MockClock) -> None:
    # hypercorn queues the last (empty) message after the app has run for a moment: not waited for.
    async with api({**CONFIG, "server": {"read-timeout": 5}}) as a:
        await a.put_pipeline("app", pipeline_yaml())
        body = b'{"variables": {}}'
        sender, receiver = trio.open_memory_channel[dict[str, Any]](10)
        sender.send_nowait(_part(body, more=True))
        answer = _Answer()
        started = trio.current_time()
        await a.rt.asgi_app(_scope((b"content-length", b"%d" % len(body))), receiver.receive, answer.send)
        assert answer.status == 201, answer.body
        assert trio.current_time() == started
        empty = _Answer()
        await a.rt.asgi_app(_scope((b"content-length", b"0")), trio.open_memory_channel[dict[str, Any]](1)[1].receive,
                            empty.send)  # fmt: skip
        assert empty.status == 201 and trio.current_time() == started


@pytest.mark.trio
async def test_the_rest_of_a_body_is_awaited(autojump_clock: trio.testing.MockClock) -> None:
    async with api({**CONFIG, "server": {"read-timeout": 5}}) as a:
        await a.put_pipeline("app", pipeline_yaml())
        sender, receiver = trio.open_memory_channel[dict[str, Any]](10)
        sender.send_nowait(_part(b'{"varia', more=True))
        answer = _Answer()

        async def rest() -> None:
            await trio.sleep(4)
            await sender.send(_part(b'bles": {}}', more=True))
            await sender.send(_part(b"", more=False))

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rest)
            await a.rt.asgi_app(_scope((b"content-length", b"17")), receiver.receive, answer.send)
        assert answer.status == 201, answer.body
        assert trio.current_time() - started == pytest.approx(4)


@pytest.mark.trio
async def test_a_queued_part_and_then_nothing_is_408(autojump_clock: trio.testing.MockClock) -> None:
    async with api({**CONFIG, "server": {"read-timeout": 5}}) as a:
        await a.put_pipeline("app", pipeline_yaml())
        before = await a.state()
        sender, receiver = trio.open_memory_channel[dict[str, Any]](10)
        sender.send_nowait(_part(b'{"varia', more=True))
        answer = _Answer()
        started = trio.current_time()
        await a.rt.asgi_app(_scope((b"content-length", b"100000")), receiver.receive, answer.send)
        assert trio.current_time() - started == pytest.approx(5)
        assert answer.status == 408 and answer.body["error"] == "request_timeout"
        assert await a.state() == before


@pytest.mark.trio
async def test_queued_parts_over_the_limit_are_413(autojump_clock: trio.testing.MockClock) -> None:
    async with api({**CONFIG, "server": {"max-body-bytes": 1000}}) as a:
        await a.put_pipeline("app", pipeline_yaml())
        before = await a.state()
        sender, receiver = trio.open_memory_channel[dict[str, Any]](20)
        for _ in range(10):  # no content-length: the limit holds while reading
            sender.send_nowait(_part(b" " * 200, more=True))
        answer = _Answer()
        await a.rt.asgi_app(_scope(), receiver.receive, answer.send)
        assert answer.status == 413 and answer.body["error"] == "body_too_large"
        assert await a.state() == before


@pytest.mark.trio
async def test_a_queued_disconnect_is_not_acted_upon(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        before = await a.state()
        sender, receiver = trio.open_memory_channel[dict[str, Any]](10)
        sender.send_nowait(_part(b'{"variables": {}}', more=True))
        sender.send_nowait({"type": "http.disconnect"})
        answer = _Answer()
        await a.rt.asgi_app(_scope(), receiver.receive, answer.send)
        assert answer.messages == []
        assert await a.state() == before


def test_ready_takes_from_a_trio_channel_only() -> None:
    sender, receiver = trio.open_memory_channel[dict[str, Any]](10)
    first, last = _part(b"a", more=True), _part(b"b", more=False)
    sender.send_nowait(first)
    sender.send_nowait(last)
    take = _ready(receiver.receive)
    assert take is not None
    assert take() is first and take() is last and take() is None  # nothing more queued: not waited for
    sender.close()
    assert take() is None  # closed: left to the awaited receive, which says so

    async def plain() -> dict[str, Any]:
        return last

    assert _ready(plain) is None
    assert _ready(receiver.clone().receive_nowait) is None  # type: ignore[arg-type]  # not the channel's receive
