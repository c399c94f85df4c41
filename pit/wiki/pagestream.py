"""Pages out of bz2-compressed dump XML, with a bound on the bytes one page may hold in memory.

bz2 data is decompressed piece by piece, at most `PIECE` bytes of output per
call, so a few kilobytes that expand to gigabytes (a bz2 bomb) never land in
memory at once. What has been decompressed is cut after its last `</page>`:
the whole pages before the cut are scanned, and only the page still being
read is kept. A page that grows past `max_page_bytes` without closing (a
dump cut in the middle of a page, a damaged one, a bomb) stops the read with
an error that says where, instead of reading the rest of the file into
memory. The largest real article (wikitext of the longest lists) is a few
MiB, so the default, 64 MiB, stops only damage.
"""

from __future__ import annotations

import bz2
from collections.abc import Iterable, Iterator

PIECE = 1 << 20
"""Most bytes one decompression call returns."""

DEFAULT_MAX_PAGE_MB = 64.0

_END = b"</page>"


class PageError(Exception):
    """Data that cannot be read as pages; the reader adds the file and offset and decides."""


class Inflater:
    """Decompresses concatenated bz2 streams, `PIECE` bytes of output at a time.

    `consumed` counts the compressed bytes handed in so far and `produced` the
    decompressed bytes given out, so errors can say roughly where they are.
    """

    def __init__(self) -> None:
        self._d: bz2.BZ2Decompressor | None = None
        self.streams = 0
        self.consumed = 0
        self.produced = 0

    def pieces(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        """Decompressed bytes of `blocks`; PageError when the data is corrupt."""
        for block in blocks:
            self.consumed += len(block)
            data = block
            while data or (self._d is not None and not self._d.eof and not self._d.needs_input):
                if self._d is None or self._d.eof:
                    self._d = bz2.BZ2Decompressor()
                try:
                    out = self._d.decompress(data, PIECE)
                except (OSError, EOFError, ValueError) as e:
                    raise PageError(f"bz2 data is corrupt ({e})") from e
                data = b""
                if self._d.eof:
                    self.streams += 1
                    data = self._d.unused_data
                if out:
                    self.produced += len(out)
                    yield out

    def finish(self) -> None:
        """PageError if the last stream has no end-of-stream marker (the data is cut short)."""
        if self._d is not None and not self._d.eof:
            raise PageError("bz2 stream is truncated (no end-of-stream marker)")


def whole_pages(pieces: Iterable[bytes], max_page_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Runs of whole `<page>` elements (up to a `</page>`), then whatever follows the last one.

    Each run comes with its offset in the decompressed XML. Raises PageError
    when more than `max_page_bytes` follow the last `</page>`.
    """
    buf = bytearray()
    offset = 0
    for piece in pieces:
        start = max(0, len(buf) - len(_END) + 1)
        buf += piece
        cut = buf.rfind(_END, start)
        if cut >= 0:
            cut += len(_END)
            yield offset, bytes(buf[:cut])
            del buf[:cut]
            offset += cut
        if len(buf) > max_page_bytes:
            raise PageError(
                f"the page at byte {offset} of the decompressed XML is not closed after "
                f"{len(buf) / (1 << 20):.0f} MiB: the dump is damaged (a page without </page>) "
                "or expands without end (a bz2 bomb). If the dump is sound and holds pages "
                f"this long, raise max_page_mb (--max-page-mb, now {max_page_bytes / (1 << 20):g})"
            )
    if buf:
        yield offset, bytes(buf)


def pages_in(data: bytes, where: str, offset: int = 0) -> Iterator[bytes]:
    """The `<page>...</page>` elements of decompressed XML, checked for balance.

    `offset` is where `data` begins in the decompressed XML, for messages.
    """
    pos = 0
    while True:
        start = data.find(b"<page>", pos)
        if start < 0:
            if data.find(_END, pos) >= 0:
                raise PageError(f"{where}: malformed XML, </page> without <page>")
            return
        end = data.find(_END, start)
        nxt = data.find(b"<page>", start + 6, end if end >= 0 else len(data))
        if end < 0 or nxt >= 0:
            raise PageError(f"{where}: malformed XML, <page> at byte {offset + start} "
                            "is never closed")
        end += len(_END)
        yield data[start:end]
        pos = end
