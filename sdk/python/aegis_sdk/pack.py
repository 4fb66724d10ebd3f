"""pack_agent(directory): the .tar.gz bundle of an agent directory, honouring its .aegisignore (no shell tar).

The rules are the CLI's and the TypeScript SDK's (sdk/pack.ts): entries sorted by path, directories 0755, files 0644
(0755 when any execute bit is set), mtime 0, uid/gid 0, no user or group names, gzip level 9 with mtime 0 — so the
same files always give the same bytes from this packer. Symbolic links, sockets, FIFOs and devices are refused, so
are names the server refuses, and the server's default caps are checked before uploading.

.aegisignore: one pattern per line, a subset of .gitignore — ``#`` comments; ``*`` and ``?`` within a path segment;
``**`` across segments; a leading or inner ``/`` anchors the pattern to the agent directory; a trailing ``/``
matches directories only; ``!`` re-includes (the last matching pattern wins; nothing inside a left-out directory
comes back). ``.git`` and ``node_modules/.cache`` are always left out.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
from typing import List, NamedTuple, Optional, Tuple

from .errors import AegisError, make_error

MiB = 1024 * 1024
MAX_BUNDLE_BYTES = 64 * MiB
MAX_UNPACKED_BYTES = 256 * MiB
MAX_FILE_BYTES = 64 * MiB
MAX_ENTRIES = 10_000
MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 4096
_BUILT_IN = (".git", "node_modules/.cache")


class PackedAgent(NamedTuple):
    data: bytes
    """The .tar.gz bytes."""
    files: int
    """Regular files in the bundle."""
    digest: str
    """Lowercase hex SHA-256 of ``data``."""


class _Rule(NamedTuple):
    negate: bool
    dir_only: bool
    regex: "re.Pattern[str]"


def _segment_regex(segment: str) -> str:
    out, i = "", 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        else:
            out += re.escape(c)
        i += 1
    return out


def _glob_regex(pattern: str) -> str:
    segments = pattern.split("/")
    out = ""
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            out += ".+" if last else "(?:[^/]+/)*"
        else:
            out += _segment_regex(segment) + ("" if last else "/")
    return out


def _parse_line(line: str) -> Optional[_Rule]:
    pattern = line.rstrip()
    if pattern == "" or pattern.startswith("#"):
        return None
    negate = pattern.startswith("!")
    if negate:
        pattern = pattern[1:]
    dir_only = pattern.endswith("/")
    pattern = pattern.rstrip("/")
    anchored = "/" in pattern
    pattern = pattern.lstrip("/")
    if pattern == "":
        return None
    body = _glob_regex(pattern)
    regex = re.compile(f"^{body}$" if anchored else f"^(?:.*/)?{body}$", re.DOTALL)
    return _Rule(negate, dir_only, regex)


class IgnoreRules:
    """The rules of one .aegisignore text."""

    def __init__(self, text: str = "") -> None:
        self._built_in = [r for r in (_parse_line(f"**/{p}") for p in _BUILT_IN) if r is not None]
        self._rules = [r for r in (_parse_line(line) for line in re.split(r"\r?\n", text)) if r is not None]

    def ignores(self, path: str, is_dir: bool) -> bool:
        """True when ``path`` (relative, ``/``-separated) is left out."""

        def matches(rule: _Rule) -> bool:
            return (not rule.dir_only or is_dir) and rule.regex.match(path) is not None

        if any(matches(rule) for rule in self._built_in):
            return True
        ignored = False
        for rule in self._rules:
            if matches(rule):
                ignored = not rule.negate
        return ignored


_FORBIDDEN = re.compile("[\u0000-\u001f\u007f-\u009f\ufffd]")


def entry_path_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot name a bundle entry (the server's rules), or None when it can."""
    if path == "":
        return "the path is empty"
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        return f"the path is longer than {MAX_PATH_BYTES} bytes"
    if path.startswith("/"):
        return "the path is absolute"
    if "\\" in path:
        return "the path contains a backslash"
    if "\0" in path:
        return "the path contains a NUL byte"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "the path is not valid UTF-8"
    if _FORBIDDEN.search(path):
        return "the path contains a control character"
    for segment in path.split("/"):
        if segment == "..":
            return 'the path has a ".." segment'
        if segment in ("", "."):
            return 'the path has an empty or "." segment'
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def _usage(message: str, **details: object) -> AegisError:
    return make_error("USAGE", message, 0, details)


def pack_agent(directory: "str | os.PathLike[str]") -> PackedAgent:
    """Packs the agent directory (the one holding agent.yaml) into a deployable .tar.gz."""
    root = os.path.abspath(os.fspath(directory))
    manifest = os.path.join(root, "agent.yaml")
    try:
        st = os.lstat(manifest)
    except FileNotFoundError:
        raise make_error(
            "NOT_FOUND", f"no agent.yaml in {root}", 0,
            {"hint": "pass the agent directory, the one that holds agent.yaml"},
        ) from None
    except NotADirectoryError:
        raise make_error("NOT_FOUND", f"no agent.yaml in {root}", 0, {"hint": "pass a directory"}) from None
    if stat.S_ISLNK(st.st_mode):
        raise _usage(f"{manifest} is a symbolic link; bundles cannot contain links",
                     hint="replace the link with a copy of the manifest")
    if not stat.S_ISREG(st.st_mode):
        raise _usage(f"{manifest} is not a regular file",
                     hint="agent.yaml must be the manifest file at the root of the agent directory")
    ignore_file = os.path.join(root, ".aegisignore")
    text = ""
    if os.path.lexists(ignore_file):
        if not stat.S_ISREG(os.lstat(ignore_file).st_mode):
            raise _usage(f"{ignore_file} is not a regular file",
                         hint=".aegisignore must be a plain text file (a link is not followed)")
        with open(ignore_file, encoding="utf-8") as f:
            text = f.read()
    entries = _plan(root, IgnoreRules(text))
    if not any(path == "agent.yaml" for path, _, _ in entries):
        raise _usage(f"{ignore_file} leaves out agent.yaml",
                     hint="a bundle must hold its manifest; remove the pattern that matches agent.yaml")
    data = _archive(root, entries)
    files = sum(1 for _, is_dir, _ in entries if not is_dir)
    return PackedAgent(data, files, hashlib.sha256(data).hexdigest())


def _plan(root: str, ignore: IgnoreRules) -> List[Tuple[str, bool, int]]:
    """(path, is_dir, mode) of every entry, sorted by path (UTF-8 byte order)."""
    hint = f"leave build outputs, data and caches out of the bundle with {os.path.join(root, '.aegisignore')}"
    entries: List[Tuple[str, bool, int]] = []
    unpacked = 0

    def walk(rel_dir: str) -> None:
        nonlocal unpacked
        for name in os.listdir(os.path.join(root, rel_dir) if rel_dir else root):
            path = f"{rel_dir}/{name}" if rel_dir else name
            absolute = os.path.join(root, path)
            st = os.lstat(absolute)
            is_dir = stat.S_ISDIR(st.st_mode)
            if ignore.ignores(path, is_dir):
                continue
            if stat.S_ISLNK(st.st_mode):
                raise _usage(f"{path} is a symbolic link; bundles cannot contain links", path=absolute,
                             hint=f'add "/{path}" to .aegisignore or replace the link with a copy of its target')
            if not is_dir and not stat.S_ISREG(st.st_mode):
                raise _usage(f"{path} is a special file; bundles hold only files and directories",
                             path=absolute, hint=f'add "/{path}" to .aegisignore')
            problem = entry_path_problem(path)
            if problem:
                raise _usage(f"{path!r} cannot be bundled: {problem}", path=absolute,
                             hint="rename it, or add it to .aegisignore")
            if len(entries) >= MAX_ENTRIES:
                raise make_error("PAYLOAD_TOO_LARGE",
                                 f"the agent directory has more than {MAX_ENTRIES} files and directories",
                                 0, {"path": absolute, "hint": hint})
            if is_dir:
                entries.append((path, True, 0o755))
                walk(path)
                continue
            if st.st_size > MAX_FILE_BYTES:
                raise make_error("PAYLOAD_TOO_LARGE",
                                 f"{path} is {st.st_size} bytes; files are capped at {MAX_FILE_BYTES} bytes",
                                 0, {"path": absolute, "hint": hint})
            unpacked += st.st_size
            if unpacked > MAX_UNPACKED_BYTES:
                raise make_error("PAYLOAD_TOO_LARGE",
                                 f"the agent directory holds more than {MAX_UNPACKED_BYTES} bytes of files",
                                 0, {"path": absolute, "hint": hint})
            entries.append((path, False, 0o755 if st.st_mode & 0o111 else 0o644))

    walk("")
    entries.sort(key=lambda entry: entry[0].encode("utf-8"))
    return entries


def _archive(root: str, entries: List[Tuple[str, bool, int]]) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, is_dir, mode in entries:
                info = tarfile.TarInfo(path)
                info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = mode, 0, 0, 0, "", ""
                if is_dir:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                    continue
                # O_NOFOLLOW: a file swapped for a link since it was planned is refused, not followed.
                fd = os.open(os.path.join(root, path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                with os.fdopen(fd, "rb") as f:
                    content = f.read(MAX_FILE_BYTES + 1)
                if len(content) > MAX_FILE_BYTES:
                    raise _usage(f"{path} grew while it was being packed",
                                 hint="deploy again once nothing is writing to the agent directory")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    data = bytearray(raw.getvalue())
    data[9] = 3  # gzip OS byte: Unix
    if len(data) > MAX_BUNDLE_BYTES:
        raise make_error("PAYLOAD_TOO_LARGE",
                         f"the bundle is {len(data)} bytes compressed; bundles are capped at {MAX_BUNDLE_BYTES}",
                         0, {"hint": "leave build outputs, data and caches out of the bundle with .aegisignore"})
    return bytes(data)
