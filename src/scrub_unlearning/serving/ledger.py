"""An append-only JSON-lines ledger of processed deletion requests, readable by an auditor.

Each line records one processed request: its `request_id`, the keyed hashes (HMAC-SHA256) of the forgotten ids and
of the id set, how many ids, the model versions before and after, the gate results, whether the new model was
promoted, the method and the time (UTC). The ids themselves never appear in clear, and the ledger holds none of the
forgotten data: an auditor can see what was forgotten when, and someone holding the key can check whether a given
id was forgotten, but the file alone does not reveal the ids.

The key comes from `ledger_key`: in production set ``SCRUB_LEDGER_KEY`` from a secret store (a vault, a cloud
secret manager, a Kubernetes secret); the key file fallback is for development and tests. The key must stay the same
for the life of a ledger: every entry carries a short key fingerprint (`key_id`), and reading a ledger with another
key fails instead of silently matching nothing.

Processed means promoted: `find` and `forgotten_ids` look at promoted entries only (by default), because an entry
whose model was not promoted did not remove anything from the served model, and the request must be retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch

from .requests import _as_ids, _first

try:  # advisory lock so concurrent writers do not race the conflict check (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

ENV_VAR = "SCRUB_LEDGER_KEY"
KEY_BYTES = 32
SCHEMA = 1
_KEY_ID_MESSAGE = b"scrub_unlearning ledger key id"


def keyed_hash(key: bytes, example_id: int) -> str:
    """HMAC-SHA256 (hex) of the id's decimal string."""
    return hmac.new(_check_key(key), str(_one_id(example_id)).encode("ascii"), hashlib.sha256).hexdigest()


def set_hash(key: bytes, ids: torch.Tensor | Iterable[int]) -> str:
    """HMAC-SHA256 (hex) of the sorted ids joined by commas: the same for any order of the same ids (a set, so
    repeated ids count once)."""
    values = sorted(set(_as_ids(ids, "set_hash").tolist()))
    return hmac.new(_check_key(key), ",".join(map(str, values)).encode("ascii"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short public fingerprint of the key (an HMAC of a constant), to detect a ledger read with the wrong key."""
    return hmac.new(_check_key(key), _KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:16]


def ledger_key(env_var: str = ENV_VAR, key_file: str | Path | None = None) -> bytes:
    """The ledger's secret HMAC key, as bytes.

    1. The environment variable `env_var` (default ``SCRUB_LEDGER_KEY``), hex-encoded, at least 32 bytes
       (64 hex characters, e.g. ``python -c "import secrets; print(secrets.token_hex(32))"``). Production should set
       it from a secret store, never from a file committed or shipped with the code.
    2. Else `key_file`: read (hex) when it exists; created with 32 random bytes (hex) and mode 0600 when absent.

    The same key must be used for the whole life of a ledger. Raises ValueError when the variable is set but empty
    or malformed, when the key file is malformed, or when neither source is given."""
    value = os.environ.get(env_var)
    if value is not None:
        return _parse_key(value, f"environment variable {env_var}")
    if key_file is None:
        raise ValueError(
            f"no ledger key: set the environment variable {env_var} (hex, at least {KEY_BYTES} bytes) from a secret "
            f"store, or pass key_file= for a local key file"
        )
    path = Path(key_file)
    if not path.exists():
        _create_key_file(path)
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        warnings.warn(f"ledger key file {path} is readable by others (mode {mode:o}); it should be 0600", stacklevel=2)
    return _parse_key(path.read_text(encoding="ascii"), f"key file {path}")


def _create_key_file(path: Path) -> None:
    """Write 32 random bytes (hex) to `path` with mode 0600, atomically: a concurrent caller sees either no file or
    the whole key, and never overwrites a key that appeared in the meantime."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created with mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(KEY_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        os.unlink(temporary)


def _parse_key(text: str, source: str) -> bytes:
    text = text.strip()
    if not text:
        raise ValueError(f"ledger key from {source} is empty")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"ledger key from {source} is not hex-encoded") from None
    if len(key) < KEY_BYTES:
        raise ValueError(f"ledger key from {source} has {len(key)} bytes; at least {KEY_BYTES} are needed")
    return key


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise TypeError(f"the ledger key must be non-empty bytes, got {type(key).__name__}")
    return bytes(key)


def _one_id(example_id) -> int:
    (value,) = _as_ids([example_id], "keyed_hash").tolist()
    return value


def _jsonable(value, where: str):
    """Plain JSON values: numpy / torch scalars unwrapped, tuples as lists, non-finite floats as strings."""
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        if tuple(getattr(value, "shape", ())) != ():  # arrays could hold ids: only scalars are accepted
            raise TypeError(f"{where}: arrays are not accepted, only scalars (got shape {tuple(value.shape)})")
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(f"{where}: keys must be strings, got {name!r}")
            out[name] = _jsonable(item, f"{where}.{name}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def _utc_iso(when: datetime | None) -> str:
    if when is None:
        when = datetime.now(timezone.utc)
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"ledger time must be timezone-aware, got naive {when.isoformat()}")
    return when.astimezone(timezone.utc).isoformat()


class Ledger:
    """The append-only ledger at `path` (JSON lines), hashing ids with `key` (see `ledger_key`).

    Typical use, per request: `find` (a promoted earlier entry means the rerun is a no-op; a conflicting request_id
    raises), then `validate_request(request, training_ids, ledger.forgotten_ids(request.ids))`, unlearn, gate,
    promote, and `record`."""

    def __init__(self, path: str | Path, key: bytes) -> None:
        self.path = Path(path)
        self.key = _check_key(key)
        self.key_id = key_id(self.key)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}, key_id={self.key_id!r})"

    # -- reading ---------------------------------------------------------------------------------------------------

    def entries(self) -> list[dict]:
        """Every entry, oldest first (for auditors: what was forgotten when, no ids in clear)."""
        return list(self._read())

    def _read(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # the text after the last newline: empty unless a write was interrupted
        if torn.strip():
            warnings.warn(
                f"ledger {self.path}: ignoring an unterminated last line (an interrupted write); repair the file "
                f"before recording more", stacklevel=3,
            )
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as error:
                raise ValueError(f"ledger {self.path}, line {number}: not valid JSON ({error})") from None
            if not isinstance(entry, dict) or not {"request_id", "set_hash", "id_hashes"} <= set(entry):
                raise ValueError(f"ledger {self.path}, line {number}: not a ledger entry")
            if entry.get("key_id") != self.key_id:
                raise ValueError(
                    f"ledger {self.path}, line {number}: written with another key (key id {entry.get('key_id')!r}, "
                    f"this key is {self.key_id!r}); use the key the ledger was written with"
                )
            yield entry

    def _same_request(self, request_id: str, digest: str) -> list[dict]:
        """Entries of `request_id` with this set hash; ValueError if the request_id was used for another id set."""
        same = []
        for entry in self._read():
            if entry["request_id"] != request_id:
                continue
            if entry["set_hash"] != digest:
                raise ValueError(
                    f"conflicting request: request_id '{request_id}' was already recorded at {entry.get('time')} "
                    f"with a different set of ids ({entry.get('count')} ids); a request_id must always name the "
                    f"same ids — use a new request_id for a new request"
                )
            same.append(entry)
        return same

    def find(self, request_id: str, ids: torch.Tensor | Iterable[int], promoted_only: bool = True) -> dict | None:
        """The latest earlier entry of the same request (same request_id and same id set), else None.

        With `promoted_only` (the default), only entries whose model was promoted count: a request whose model
        failed its gates was not served, and must be retried. Raises ValueError when `request_id` was recorded with
        a different id set (a conflicting request)."""
        same = self._same_request(_check_request_id(request_id), set_hash(self.key, ids))
        if promoted_only:
            same = [entry for entry in same if entry.get("promoted") is True]
        return dict(same[-1]) if same else None

    def forgotten_ids(self, ids: torch.Tensor | Iterable[int], promoted_only: bool = True) -> set[int]:
        """Which of `ids` an earlier entry already forgot (by keyed hash; promoted entries only by default)."""
        wanted = {keyed_hash(self.key, value): value for value in _as_ids(ids, "forgotten_ids").tolist()}
        seen: set[str] = set()
        for entry in self._read():
            if promoted_only and entry.get("promoted") is not True:
                continue
            seen.update(entry["id_hashes"])
        return {value for digest, value in wanted.items() if digest in seen}

    # -- writing ---------------------------------------------------------------------------------------------------

    def record(self, request_id: str, ids: torch.Tensor | Iterable[int], version_before, version_after,
               gates: dict, promoted: bool, method: str, when: datetime | None = None) -> dict:
        """Append one entry for a processed request and return it.

        Raises ValueError for an empty or repeated id list, for a request_id already recorded with a different id
        set (a conflicting request), and for a ledger whose last line is torn; TypeError for values JSON cannot hold.
        `gates` must hold gate results (names, metrics, pass/fail), never example ids. The line is written with one
        `write` in append mode, then flushed and fsynced."""
        request_id = _check_request_id(request_id)
        values = _as_ids(ids, f"ledger record '{request_id}'").tolist()
        if not values:
            raise ValueError(f"ledger record '{request_id}': no ids")
        if len(set(values)) != len(values):
            repeated = sorted(value for value in set(values) if values.count(value) > 1)
            raise ValueError(f"ledger record '{request_id}': {len(repeated)} id(s) repeated: {_first(repeated)}")
        if not isinstance(gates, dict):
            raise TypeError(f"ledger record '{request_id}': gates must be a dict, got {type(gates).__name__}")
        promoted = _jsonable(promoted, "promoted")
        if not isinstance(promoted, bool):
            raise TypeError(f"ledger record '{request_id}': promoted must be a bool, got {promoted!r}")
        if not isinstance(method, str) or not method:
            raise ValueError(f"ledger record '{request_id}': method must be a non-empty string, got {method!r}")
        entry = {
            "schema": SCHEMA,
            "request_id": request_id,
            "id_hashes": sorted(keyed_hash(self.key, value) for value in values),
            "set_hash": set_hash(self.key, values),
            "count": len(values),
            "version_before": _jsonable(version_before, "version_before"),
            "version_after": _jsonable(version_after, "version_after"),
            "gates": _jsonable(gates, "gates"),
            "promoted": promoted,
            "method": method,
            "time": _utc_iso(when),
            "key_id": self.key_id,
        }
        line = json.dumps(entry, sort_keys=True, allow_nan=False, ensure_ascii=True) + "\n"
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle, _locked(handle):
            if self._torn():
                raise ValueError(
                    f"ledger {self.path}: the last line is unterminated (an interrupted write); repair the file "
                    f"before recording '{request_id}'"
                )
            self._same_request(request_id, entry["set_hash"])  # raises on a conflicting request_id
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_directory(self.path.parent)
        return entry

    def _torn(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"


def _check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not request_id.strip():
        raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
    return request_id.strip()


@contextmanager
def _locked(handle):
    """An exclusive advisory lock on an open file, where the platform has one."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync_directory(directory: Path) -> None:
    """Make a newly created file's directory entry durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":  # pragma: no cover
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
