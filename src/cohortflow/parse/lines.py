"""Raw log bytes as Arrow lines, and those lines as text for the fast path."""

from __future__ import annotations

import codecs
from typing import Final

import numpy as np
import pyarrow as pa

from cohortflow.parse.rules import LINE_LIMIT

RAW_SCHEMA: Final = pa.schema([("file", pa.string()), ("offset", pa.int64()), ("line", pa.large_binary())])


def split_lines(buf: bytes | memoryview, base_offset: int, file: str) -> pa.RecordBatch:
    """Cut a newline-terminated buffer into a RAW_SCHEMA batch without copying the bytes.

    Each value keeps its trailing newline (the parse strips it); offsets are
    the lines' byte offsets in the file. A memoryview (of a bigger read) is
    not copied either.
    """
    buf = memoryview(buf)
    if buf.nbytes and buf[-1] != ord("\n"):
        msg = "split_lines needs a buffer that ends at a newline"
        raise ValueError(msg)
    ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10) + 1
    offsets = np.concatenate([np.zeros(1, dtype=np.int64), ends.astype(np.int64)])
    count = len(ends)
    lines = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(buf)]
    )
    files = pa.DictionaryArray.from_arrays(
        _from_numpy(np.zeros(count, dtype=np.int32), pa.int32()), _one(file)
    )
    return pa.RecordBatch.from_arrays(
        [files.cast(pa.string()), _from_numpy(offsets[:-1] + base_offset, pa.int64()), lines],
        schema=RAW_SCHEMA,
    )


def _one(text: str) -> pa.StringArray:
    """A one-string array, built from buffers (pa.array on Python objects imports pandas when present)."""
    data = text.encode()
    offsets = np.array([0, len(data)], dtype=np.int32)
    return pa.StringArray.from_buffers(1, pa.py_buffer(offsets), pa.py_buffer(data))


def _from_numpy(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """Wrap a numpy buffer as an Arrow array (pa.array on numpy would import pandas)."""
    data = np.ascontiguousarray(values)
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def _undecodable(lines: pa.LargeBinaryArray, skip: np.ndarray, group: int = 256) -> np.ndarray:
    """``skip``, plus the other lines that are not UTF-8 (groups at once, then one by one)."""
    bad = skip.copy()
    offsets = _offsets(lines)
    data = memoryview(lines.buffers()[2] or b"")
    for low in range(0, len(lines), group):
        high = min(low + group, len(lines))
        if skip[low:high].any() or not _decodes(data[offsets[low] : offsets[high]]):
            for row in range(low, high):
                bad[row] = skip[row] or not _decodes(data[offsets[row] : offsets[row + 1]])
    return bad


def _decodes(data: memoryview) -> bool:
    try:
        codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def _offsets(lines: pa.LargeBinaryArray) -> np.ndarray:
    return np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]


def as_raw(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """Any batch of raw lines (binary or large_binary, table or batch) as a RAW_SCHEMA table."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    return table if table.schema.equals(RAW_SCHEMA) else table.cast(RAW_SCHEMA)


def decoded(lines: pa.LargeBinaryArray) -> pa.LargeStringArray:
    """The lines as text, with lines the fast path must not see (too long, not UTF-8) nulled.

    The bytes are not copied: a nulled line keeps its bytes under the null.
    """
    skip = np.diff(_offsets(lines)) > LINE_LIMIT  # newline or not: the full rule measures exactly
    if not skip.any():
        try:
            return lines.cast(pa.large_string())
        except pa.ArrowInvalid:
            pass
    valid = ~_undecodable(lines, skip)
    if lines.null_count:
        valid &= lines.is_valid().to_numpy(zero_copy_only=False)
    bits = _mask(np.concatenate([np.zeros(lines.offset, dtype=bool), valid])).buffers()[1]
    offsets, data = lines.buffers()[1:]
    return pa.Array.from_buffers(pa.large_string(), len(lines), [bits, offsets, data], offset=lines.offset)


def _mask(flags: np.ndarray) -> pa.BooleanArray:
    bits = np.packbits(flags, bitorder="little")
    return pa.BooleanArray.from_buffers(pa.bool_(), len(flags), [None, pa.py_buffer(bits)])
