"""Rotation-safe following of growing log files (the file side of live mode's inputs).

One role per module, in the shape of Filebeat's filestream input and Vector's file
source: `scan` (targets -> files, rotation stems), `identity` (device, inode, fingerprint,
copies), `harvester` (one open file: its lines, its truncation), `positions` (the saved
position of a file and the registry's `follow` section), `resume` (continuing from a saved
state, files rotated while stopped), `watch` (notification) and `follower` (the loop that
drives them and returns `Chunk`s).
"""

from zeekndm.live.follow.follower import (
    MAX_OPEN_FILES,
    PARK_AFTER,
    Chunk,
    FileLag,
    Follower,
)
from zeekndm.live.follow.harvester import MAX_LINE_BYTES
from zeekndm.live.follow.positions import (
    FINGERPRINT_BYTES,
    STATE_VERSION,
    EndedFile,
    FilePosition,
    FollowState,
)
from zeekndm.live.follow.scan import FollowTarget

__all__ = [
    "FINGERPRINT_BYTES",
    "MAX_LINE_BYTES",
    "MAX_OPEN_FILES",
    "PARK_AFTER",
    "STATE_VERSION",
    "Chunk",
    "EndedFile",
    "FileLag",
    "FilePosition",
    "FollowState",
    "FollowTarget",
    "Follower",
]
