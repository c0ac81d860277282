"""Read offline W&B run files back (run id, group, job type, config, summary, history, artifacts) for tests.

The `.wandb` file is a LevelDB-style log of protobuf `Record`s: a 7-byte header (":W&B",
magic, version), then 32 KiB blocks of chunks, each with a 7-byte header (crc32, length,
type FULL=1/FIRST=2/MIDDLE=3/LAST=4). A file cut short (a process killed mid-run) yields the
records of its complete blocks.

The tracker writes each run in segments (one offline directory each); `read_runs` merges the
segments of one run id in start order, as `wandb sync` uploads them.
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

    out = {"config": {}, "summary": {}, "history": [], "artifacts": [], "id": None, "group": None,
           "job_type": None, "start": None, "path": Path(path), "exit": False}
    data = Path(path).read_bytes()
    if len(data) < 7:
        return out
    for raw in _chunks(data):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(id=rec.run.run_id, group=rec.run.run_group, job_type=rec.run.job_type,
                       project=rec.run.project, entity=rec.run.entity, start=rec.run.start_time.ToMicroseconds())
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "summary":
            _put(out["summary"], rec.summary.update)
        elif kind == "history":
            row: dict = {}
            _put(row, rec.history.item)
            out["history"].append(row)
        elif kind == "artifact":
            out["artifacts"].append(_artifact(rec.artifact))
        elif kind == "exit":
            out["exit"] = True
    return out


def _put(target: dict, items) -> None:
    """Items with a nested key (media, tables) become nested dicts."""
    for i in items:
        path = [i.key] if i.key else list(i.nested_key)
        node = target
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(i.value_json)


def _artifact(a) -> dict:
    return {"name": a.name, "type": a.type, "aliases": list(a.aliases), "digest": a.digest,
            "metadata": json.loads(a.metadata) if a.metadata else {},
            "entries": {e.path: {"digest": e.digest, "size": e.size, "local_path": e.local_path}
                        for e in a.manifest.contents}}


def read_all(wandb_dir: Path) -> list[dict]:
    """Every segment (offline directory), in start order."""
    runs = [read_run(p) for p in Path(wandb_dir).glob("offline-run-*/run-*.wandb")]
    return sorted(runs, key=lambda r: (r["start"] or 0, str(r["path"])))


def read_runs(wandb_dir: Path) -> dict[str, dict]:
    """One entry per run id: segments merged in start order (config and summary updated, history appended)."""
    merged: dict[str, dict] = {}
    for seg in read_all(wandb_dir):
        if seg["id"] is None:
            continue  # cut short before its first block was written
        run = merged.setdefault(seg["id"], {"id": seg["id"], "group": seg["group"], "job_type": seg["job_type"],
                                            "project": seg.get("project"), "entity": seg.get("entity"),
                                            "config": {}, "summary": {}, "history": [], "artifacts": [],
                                            "segments": 0})
        run["config"].update(seg["config"])
        run["summary"].update(seg["summary"])
        run["history"] += seg["history"]
        run["artifacts"] += seg["artifacts"]
        run["segments"] += 1
    return merged


def materialize(artifact: dict, dest: Path) -> Path:
    """What `artifact.download()` gives for an artifact recorded offline: each manifest entry's staged
    copy at its path, checked against the manifest's MD5 digest."""
    import base64
    import hashlib
    import shutil

    dest = Path(dest)
    for path, entry in artifact["entries"].items():
        data = Path(entry["local_path"]).read_bytes()
        assert base64.b64encode(hashlib.md5(data).digest()).decode() == entry["digest"], path
        out = dest / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    return dest
