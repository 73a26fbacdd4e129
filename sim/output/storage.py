"""Where a run's tables go: a local folder or an object-store URI, written atomically.

Every writer in the project goes through these few helpers, so a reader never sees a
half-written file:

* ``open_output(out)`` turns ``out`` (a local path, ``file://...``, ``s3://bucket/prefix``,
  ``gs://...``; anything :func:`pyarrow.fs.FileSystem.from_uri` knows) into a
  ``(filesystem, base_path)`` pair. Workers call it themselves with the same string, so
  each node writes straight to the output location.
* ``atomic_write_table`` / ``write_bytes_atomic`` / ``write_text_atomic`` write a file so
  that it appears whole or not at all. On a local (or mounted) filesystem the data goes
  to a hidden temporary name in the same folder (``.<name>.tmp-<random>``) and is then
  renamed over the final name (rename is atomic within one filesystem). On an object
  store an object becomes visible only when its upload completes, so the data is written
  under its final name directly (a rename there would be a copy plus a delete).
* A sweep point writes several files. The point is *done* only when its commit marker
  ``<out>/_commits/<point_id>.json`` exists; the marker is written last and holds the
  point's summary row. Readers of a sweep that may still be running (or that was
  interrupted) should keep only committed points: :func:`committed_point_ids` and
  :func:`read_table` do that. ``pyarrow.dataset`` already skips names that start with
  ``.`` or ``_``, so temporary files and the ``_commits`` folder never show up in a scan.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = [
    "check_out_target",
    "COMMITS_DIR",
    "FAILURES_DIR",
    "open_output",
    "join",
    "is_local",
    "atomic_write_table",
    "write_bytes_atomic",
    "write_text_atomic",
    "read_text",
    "exists",
    "commit_marker",
    "is_committed",
    "read_commit",
    "committed_point_ids",
    "clear_point",
    "partition_dir",
    "read_table",
    "read_point",
]

# Kernel and virtual filesystems: nothing a run writes belongs there.
PSEUDO_FILESYSTEMS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs",
                      "configfs", "fusectl", "pstore", "bpf", "mqueue", "binfmt_misc", "autofs", "efivarfs"}

# Schemes pyarrow.fs.FileSystem.from_uri opens.
URI_SCHEMES = {"file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"}

COMMITS_DIR = "_commits"
FAILURES_DIR = "_failures"
PARQUET_COMPRESSION = "zstd"


def open_output(out: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, base_path)`` for an output location.

    ``out`` is a local path (relative paths are made absolute, so the same string means
    the same folder in every process started from here) or a URI such as
    ``s3://bucket/prefix``. Nothing is created.
    """
    if "://" not in out:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(out))
    fs, path = pafs.FileSystem.from_uri(out)
    return fs, path.rstrip("/") or path


def _mount_of(path: str) -> tuple[str, str, set[str]] | None:
    """(mount point, filesystem type, options) of the mount holding ``path``, from
    /proc/self/mounts (None where that file does not exist: not Linux)."""
    try:
        with open("/proc/self/mounts") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        point = parts[1].replace("\\040", " ")
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best[0]):
                best = (point, parts[2], set(parts[3].split(",")))
    return best


def check_out_target(out: str, key: str = "--out") -> None:
    """Refuse an output location that cannot hold a run's folder, before anything is written:
    a URI whose scheme pyarrow does not know, a path that is (or lies under) a file or device, a
    folder on a read-only or kernel filesystem (/proc, /sys, /dev) or one this user cannot write.
    Raises ScenarioError naming ``key``; creates nothing."""
    from sim.errors import ScenarioError

    out = os.fspath(out) if isinstance(out, os.PathLike) else out
    if not isinstance(out, str) or not out.strip() or "\0" in out:
        raise ScenarioError("", key, "must be a folder path or an object-store URI")
    if "://" in out:
        scheme = out.split("://", 1)[0]
        if scheme == "file":
            out = out[len("file://"):]
        elif scheme in URI_SCHEMES:
            return  # reached (and its credentials checked) when the run opens it
        else:
            raise ScenarioError("", key, f"unknown URL scheme {scheme[:20]!r}; give a local folder or an object-store "
                                         f"URI ({', '.join(s + '://' for s in sorted(URI_SCHEMES))})")
    path = os.path.abspath(os.path.expanduser(out))
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        what = "is" if probe == path else f"lies under {probe}, which is"
        raise ScenarioError("", key, f"{out} {what} not a folder")
    mount = _mount_of(os.path.realpath(probe))
    if mount is not None:
        point, fstype, options = mount
        if fstype in PSEUDO_FILESYSTEMS:
            raise ScenarioError("", key, f"{out} is on {point}, a {fstype} kernel filesystem; choose a folder on a disk")
        if "ro" in options:
            raise ScenarioError("", key, f"{out} is on {point}, which is mounted read-only")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ScenarioError("", key, f"{out}: {probe} is not writable by this user")


def normalize_out(out: str) -> str:
    """The string to ship to workers for ``out``: absolute for local paths, else unchanged."""
    if "://" not in out:
        return os.path.abspath(os.path.expanduser(out))
    return out


def join(*parts: str) -> str:
    """Join path parts with ``/`` (pyarrow filesystems use forward slashes everywhere)."""
    return posixpath.join(*parts)


def is_local(fs: pafs.FileSystem) -> bool:
    """True where a rename is atomic (the local filesystem)."""
    return fs.type_name == "local"


def _tmp_name(path: str) -> str:
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or all of it."""
    fs.create_dir(posixpath.dirname(path), recursive=True)
    if not is_local(fs):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = _tmp_name(path)
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
    except BaseException:
        _delete_quietly(fs, tmp)
        raise


def write_text_atomic(fs: pafs.FileSystem, path: str, text: str) -> None:
    """UTF-8 text version of :func:`write_bytes_atomic`."""
    write_bytes_atomic(fs, path, text.encode("utf-8"))


def atomic_write_table(fs: pafs.FileSystem, path: str, table: pa.Table, **parquet_options: Any) -> None:
    """Write ``table`` as one Parquet file at ``path`` (zstd unless told otherwise), atomically."""
    parquet_options.setdefault("compression", PARQUET_COMPRESSION)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    if not is_local(fs):
        pq.write_table(table, path, filesystem=fs, **parquet_options)
        return
    tmp = _tmp_name(path)
    try:
        pq.write_table(table, tmp, filesystem=fs, **parquet_options)
        fs.move(tmp, path)
    except BaseException:
        _delete_quietly(fs, tmp)
        raise


def read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return f.read().decode("utf-8")


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type != pafs.FileType.NotFound:
            fs.delete_file(path)
    except OSError:
        pass


# --- commit markers -------------------------------------------------------------------


def _commit_path(base: str, point_id: str) -> str:
    return join(base, COMMITS_DIR, f"{point_id}.json")


def commit_marker(fs: pafs.FileSystem, base: str, point_id: str, record: dict | None = None) -> str:
    """Mark ``point_id`` done by writing ``<base>/_commits/<point_id>.json`` (call it last).

    ``record`` (JSON-serialisable; the sweep stores the summary row, status, node id and
    wall time there) becomes the marker's content, so a resumed sweep can rebuild its
    summary tables without rerunning committed points. Key order is kept (it is the
    column order of the summary table). Returns the JSON text written.
    """
    text = json.dumps({"point_id": point_id, **(record or {})}, default=_json_default)
    write_text_atomic(fs, _commit_path(base, point_id), text)
    return text


def is_committed(fs: pafs.FileSystem, base: str, point_id: str) -> bool:
    """True iff the point's commit marker exists."""
    return exists(fs, _commit_path(base, point_id))


def read_commit(fs: pafs.FileSystem, base: str, point_id: str) -> dict:
    return json.loads(read_text(fs, _commit_path(base, point_id)))


def committed_point_ids(fs: pafs.FileSystem, base: str) -> set[str]:
    """Ids of every committed point under ``base`` (one listing of ``_commits``)."""
    sel = pafs.FileSelector(join(base, COMMITS_DIR), allow_not_found=True)
    ids = set()
    for info in fs.get_file_info(sel):
        name = info.base_name
        if info.type == pafs.FileType.File and name.endswith(".json") and not name.startswith("."):
            ids.add(name[: -len(".json")])
    return ids


def partition_dir(base: str, table: str, point_id: str) -> str:
    """``<base>/<table>/point_id=<id>``: the hive partition of one point in one table."""
    return join(base, table, f"point_id={point_id}")


def clear_point(fs: pafs.FileSystem, base: str, point_id: str) -> None:
    """Delete everything a point may have written (before it is run again).

    Removes its commit marker first (so the point is never "done" with missing files),
    then every ``<base>/<table>/point_id=<id>`` partition, and ``<base>/<id>/``.
    """
    _delete_quietly(fs, _commit_path(base, point_id))
    _delete_quietly(fs, join(base, FAILURES_DIR, f"{point_id}.json"))
    sel = pafs.FileSelector(base, allow_not_found=True)
    for info in fs.get_file_info(sel):
        if info.type == pafs.FileType.Directory and not info.base_name.startswith(("_", ".")):
            if info.base_name == point_id:
                _delete_quietly(fs, info.path)
            else:
                _delete_quietly(fs, partition_dir(base, info.base_name, point_id))


def read_table(out: str, table: str, *, committed_only: bool = True, **to_table_options: Any) -> pa.Table:
    """Read one hive-partitioned table of a sweep (``calls``, ``steps``, ...) as Arrow.

    With ``committed_only`` (the default) partitions of points without a commit marker,
    i.e. points still running or interrupted, are left out. ``point_id`` is a string
    column.
    """
    import pyarrow.dataset as ds

    fs, base = open_output(out)
    part = ds.partitioning(pa.schema([("point_id", pa.string())]), flavor="hive")
    dataset = ds.dataset(join(base, table), filesystem=fs, format="parquet", partitioning=part)
    if committed_only:
        ids = sorted(committed_point_ids(fs, base))
        flt = ds.field("point_id").isin(ids)
        if "filter" in to_table_options:
            flt = flt & to_table_options.pop("filter")
        to_table_options["filter"] = flt
    return dataset.to_table(**to_table_options)


def read_point(out: str, table: str, point_id: str) -> pa.Table:
    """One point's rows of one table (its partition's files, without the ``point_id`` column).

    Reads the files directly rather than through ``pyarrow.dataset``, whose import also imports
    pandas where it is installed (~0.5 s): what a run reads back for its own summary."""
    fs, base = open_output(out)
    sel = pafs.FileSelector(partition_dir(base, table, point_id))
    files = sorted(i.path for i in fs.get_file_info(sel)
                   if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                   and not i.base_name.startswith(("_", ".")))
    return pa.concat_tables([pq.ParquetFile(f, filesystem=fs).read() for f in files])


def _json_default(value: Any) -> Any:
    # numpy scalars and other odd values in summary rows
    if hasattr(value, "item"):
        return value.item()
    return str(value)
