"""The frames compressing at once are bounded by the workers: each worker busy, plus one frame done and
waiting for its write. More would only hold memory (issue 12: peak RSS)."""

from __future__ import annotations

import io
import threading

import pytest
import zstandard

from dr.archive.frames import FramedOut


class _Gated(FramedOut):
    """Compression waits for ``gate``; the first time the writer must wait for a frame, the number of
    frames then queued is recorded and the gate opens."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.queued_when_full: int | None = None

    def _compress(self, data: bytearray) -> bytes:
        self.gate.wait()
        return super()._compress(data)

    def _write_oldest(self) -> None:
        if self.queued_when_full is None:
            self.queued_when_full = len(self._queue)
            self.gate.set()
        super()._write_oldest()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_frames_in_flight_are_one_more_than_the_workers(threads: int) -> None:
    out = io.BytesIO()
    framed = _Gated(out, lambda *_: None, threads=threads, frame_size=512)
    try:
        for i in range(12):
            framed.mark()
            framed.write(bytes([i]) * 600)  # each entry fills a frame
        framed.finish()
    finally:
        framed.gate.set()
        framed.close()
    assert framed.queued_when_full == threads + 1
    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue()), read_across_frames=True).read()
    assert data == b"".join(bytes([i]) * 600 for i in range(12))
