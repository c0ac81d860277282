"""Read an offline W&B run file back (run id, group, job type, config, summary) for tests.

The `.wandb` file is a LevelDB-style log of protobuf `Record`s: a 7-byte header (":W&B",
magic, version), then 32 KiB blocks of chunks, each with a 7-byte header (crc32, length,
type FULL=1/FIRST=2/MIDDLE=3/LAST=4).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768


def _chunks(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - (pos % BLOCK)
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def read_run(path: Path) -> dict:
    from wandb.proto import wandb_internal_pb2 as pb

    out = {"config": {}, "summary": {}, "id": None, "group": None, "job_type": None}
    for raw in _chunks(Path(path).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(id=rec.run.run_id, group=rec.run.run_group, job_type=rec.run.job_type)
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "summary":
            out["summary"].update({i.key: json.loads(i.value_json) for i in rec.summary.update})
    return out


def read_all(wandb_dir: Path) -> list[dict]:
    return [read_run(p) for p in sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"))]
