"""The log stream's formats: Heroku's line layout, colour on a terminal, whole lines only."""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime

from dynosim.logs import MAX_LINE_BYTES, LineSplitter, LogLine, LogStream, TerminalPrinter, timestamp


def test_lines_are_split_only_at_newlines_and_long_ones_in_herokus_chunks():
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\r\nwor") == ["hello"]
    assert splitter.feed(b"ld\n" + b"x" * (MAX_LINE_BYTES + 5) + b"\n") == ["world", "x" * MAX_LINE_BYTES, "xxxxx"]
    assert splitter.feed(b"caf\xc3") == [] and splitter.feed(b"\xa9 tail") == []
    assert splitter.close() == ["café tail"]


def test_heroku_format():
    line = LogLine(1795478400.123456, "heroku", "web.1", "State changed from starting to up")
    assert line.format() == "2026-11-24T00:00:00.123456+00:00 heroku[web.1]: State changed from starting to up"


def test_timestamps_are_datetimes_isoformat_to_the_microsecond_across_second_boundaries():
    base = 1795478400.0
    moments = [
        base + second + fraction
        for second in range(3)
        for fraction in (0.0, 0.0000004, 0.0000005, 0.0000015, 0.5, 0.9999994, 0.9999995, 0.9999999)
    ]
    moments += [base + i * 0.0123457 for i in range(2000)]
    for when in moments:
        assert timestamp(when) == datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds"), when


def _printed(colour: bool) -> str:
    read, write = os.pipe()
    with os.fdopen(write, "w") as out:
        printer = TerminalPrinter(out, colour=colour)
        stream = LogStream()
        stream.subscribe(printer)
        stream.app_output("web.1", ["one"])
        stream.app_output("worker.1", ["two"])
        stream.heroku("web.1", "three")
    with os.fdopen(read) as text:
        return text.read()


def test_colour_per_dyno_on_a_terminal_and_plain_in_a_pipe():
    coloured = _printed(colour=True)
    prefixes = re.findall(r"\x1b\[(\d+)m(\w+\[[\w.]+\]:)\x1b\[0m", coloured)
    assert [p for _, p in prefixes] == ["app[web.1]:", "app[worker.1]:", "heroku[web.1]:"]
    assert len({code for code, _ in prefixes}) == 3
    plain = _printed(colour=False)
    assert "\x1b" not in plain and plain.count("\n") == 3


def test_a_slow_reader_slows_the_producer_instead_of_growing_a_queue():
    async def scenario() -> bool:
        read, write = os.pipe()
        os.set_blocking(write, False)
        os.set_blocking(read, False)
        out = os.fdopen(write, "w")
        printer = TerminalPrinter(out, colour=False)
        stream = LogStream()
        stream.subscribe(printer)
        printer.start()
        stream.app_output("web.1", ["x" * 1000] * 3000)  # 3 MB, the pipe holds 64 KB
        waited = asyncio.ensure_future(stream.room())
        await asyncio.sleep(0.2)
        blocked = not waited.done()
        data = b""
        while not waited.done():  # the reader catches up: the producer may go on
            try:
                data += os.read(read, 1 << 20)
            except BlockingIOError:
                pass
            await asyncio.sleep(0.001)
        await printer.stop()
        out.close()
        os.close(read)
        return blocked

    assert asyncio.run(scenario())
