"""Events or polling: inotify does not see writes that other machines make on a network mount.

``PIPELINE_WATCH_MODE=auto`` (the default) polls when the share is on a network or
host-shared filesystem, found from /proc/mounts (the longest mount point that contains the
share), and uses events elsewhere. ``events`` and ``polling`` force one.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Filesystems whose changes made elsewhere raise no inotify event here.
NETWORK_FILESYSTEMS = frozenset({
    "cifs", "smb3", "smbfs", "nfs", "nfs4", "9p", "v9fs", "afs", "ceph", "glusterfs", "lustre",
    "gpfs", "ocfs2", "gfs2", "davfs", "vboxsf", "vmhgfs", "virtiofs", "drvfs", "fuse.sshfs",
    "fuse.glusterfs", "fuse.davfs2", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse", "fuse.cephfs",
    "fuse.vmhgfs-fuse", "fuse.smbnetfs", "fuse.curlftpfs",
})
MOUNTS = Path("/proc/mounts")


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash in mount points as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_of(path: Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (longest mount point prefix), if known."""
    if mounts is None:
        try:
            mounts = MOUNTS.read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = _unescape(parts[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, parts[2]
    return best_type


def choose(setting: str, share: Path, mounts: str | None = None) -> tuple[str, str]:
    """(mode, reason): ``events`` or ``polling``, and why, for the log."""
    if setting != "auto":
        return setting, f"PIPELINE_WATCH_MODE={setting}"
    fstype = filesystem_of(share, mounts)
    if fstype in NETWORK_FILESYSTEMS:
        return "polling", f"the share is on {fstype}, where other machines' writes raise no events"
    return "events", f"the share is on {fstype or 'an unknown filesystem'}"
