"""Crash-safe file updates for the feature cache (one implementation: :mod:`xmodal.io`)."""

from xmodal.io import exclusive_lock, fsync_dir, replace_file, write_json_atomic

__all__ = ["exclusive_lock", "fsync_dir", "replace_file", "write_json_atomic"]
