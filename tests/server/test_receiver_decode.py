"""Batch bodies decode to what json.loads gives, whichever decoder takes them (orjson, or
json for what orjson refuses), whole or in pieces; bad bodies name the JSON error."""

from __future__ import annotations

import json

import pytest

from fustor.errors import ProtocolError
from fustor_fusion.receiver import DECODE_PIECE_BYTES, _loads, decode_batch

ROW = ('{"op":"upsert","path":"/d/%s","type":"file","size":%d,"mtime":1700000000.123456789,'
       '"ctime":1700000001.000000000,"mode":420,"uid":1000,"gid":1000}')


@pytest.mark.parametrize("text", [
    b'{"a":[1,2.5,"x"]}',
    b'["caf\\udce9", "\\u00e9t\\u00e9"]',            # a name that is not UTF-8: lone surrogate
    b'[NaN, Infinity]',                               # refused later by the row checks
])
def test_same_values_as_json(text: bytes) -> None:
    want = json.loads(text)
    got = _loads(text)
    assert repr(got) == repr(want)


def test_an_agent_batch_in_pieces_with_odd_names_decodes_whole() -> None:
    names = [f"f{i:06d}" if i % 997 else f"odd\\udc{0x80 + i % 64:02x}{i}" for i in range(20000)]
    body = ('{"seq":7,"events":[' + ",".join(ROW % (n, i) for i, n in enumerate(names))
            + "]}").encode()
    assert len(body) > 4 * DECODE_PIECE_BYTES
    batch, _ = decode_batch(body, max_events=100_000)
    assert batch.seq == 7 and len(batch.events) == 20000
    want = json.loads(body)["events"]
    assert [e.path for e in batch.events] == ["/d/" + json.loads(f'"{n}"') for n in names]
    assert [e.path for e in batch.events] == [r["path"] for r in want]


def test_integers_beyond_64_bits_are_still_refused() -> None:
    # orjson reads them as floats, json as ints: the row checks refuse both.
    body = ('{"seq":1,"events":[' + ROW.replace('"size":%d', '"size":%s') % (
        "x", "123456789012345678901234567890") + "]}").encode()
    with pytest.raises(ProtocolError, match=r"events\[0\]\.size"):
        decode_batch(body, max_events=10)


def test_bad_json_is_named() -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        decode_batch(b'{"seq":1,"events":[{"op":}]}', max_events=10)
    with pytest.raises(ProtocolError, match="not valid JSON"):
        decode_batch(b'\xff\xfe{}', max_events=10)
