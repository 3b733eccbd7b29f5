"""An append-only, authenticated and chained JSON-lines ledger of deletion requests, readable by an auditor.

A request goes through four steps, each one line, each durable (written, flushed and fsynced, file and directory)
before the next step starts:

    intent      the request is about to register a new model version: its keyed id hashes, the version it
                starts from, the method, and a fresh `attempt` id (the new version is tagged with it)
    registered  the new version exists in the Model Registry (its number)
    recorded    the full record: versions, gates, metrics, whether the gates allow promotion
    promoted    the serving alias was moved to the new version (only when `recorded` allowed it)

An attempt is finished when it is `promoted`, or `recorded` with promotion refused (a gate failed; the request may
be retried, which starts a new attempt). Anything else is unfinished: rerunning the request resumes it at the step
after its last line, and no other request may start meanwhile.

Every line carries its position (`seq`), the previous line's MAC (`prev`; the first line chains to a genesis value
derived from the key) and `mac`, an HMAC-SHA256 with the ledger key of the line's whole canonical content (JSON,
sorted keys, without `mac`). Reading verifies every line, so an edited field, a deleted, inserted or reordered
line, a line written with another key, an unterminated (torn) last line and a step out of order are all refused
with a `LedgerError` naming the line and what is wrong. A chain cannot show that its *last* lines were cut off;
the Model Registry can (`check_against_registry`): every version a request registers is tagged with its attempt and
the line of its intent.

The ids themselves never appear in clear: only their keyed hashes (`keyed_hash`, `set_hash`). The key comes from
`ledger_key`: in production set ``SCRUB_LEDGER_KEY`` from a secret store; the key file fallback is for development
and tests. The key must stay the same for the life of a ledger.

Processed means promoted: `find` and `forgotten_ids` look at promoted attempts only (by default), because a
version that was not promoted did not remove anything from the served model.

Ledgers written before the chain (schema 1, one unauthenticated line per request) are refused; `migrate_schema1`
(the operators' `scrub-serve-requests migrate-ledger`) converts one once, trusting its content.
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
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from .requests import _as_ids, _first

try:  # advisory locks so concurrent writers and readers never see half a line (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

ENV_VAR = "SCRUB_LEDGER_KEY"
KEY_BYTES = 32
SCHEMA = 2
STEPS = ("intent", "registered", "recorded", "promoted")
ORPHAN_TAG = "ledger_status"  # the registry tag that marks a version no ledger line explains
_KEY_ID_MESSAGE = b"scrub_unlearning ledger key id"
_GENESIS_MESSAGE = b"scrub_unlearning ledger genesis, schema 2"
RECOVERY_COMMAND = "scrub-serve-requests repair-ledger"
MIGRATE_COMMAND = "scrub-serve-requests migrate-ledger"


class LedgerError(ValueError):
    """The ledger cannot be trusted as it is; the message names the line, what is wrong and how to recover.
    `line` is the 1-based line number (0 when the problem is not one line's)."""

    def __init__(self, path: Path, line: int, problem: str, recovery: str | None = None) -> None:
        self.path, self.line, self.problem = Path(path), line, problem
        where = f"ledger {path}, line {line}" if line else f"ledger {path}"
        super().__init__(f"{where}: {problem}" + (f". {recovery}" if recovery else ""))


class RequestInFlight(ValueError):
    """Another request is unfinished: it must be served again (finished) before a new one starts."""


def keyed_hash(key: bytes, example_id: int) -> str:
    """HMAC-SHA256 (hex) of the id's decimal string."""
    return _hash_int(_check_key(key), _one_id(example_id))


def _hash_int(key: bytes, value: int) -> str:
    """`keyed_hash` of an id already checked (a non-negative int): no per-id conversion, for long id lists."""
    return hmac.new(key, str(value).encode("ascii"), hashlib.sha256).hexdigest()


def set_hash(key: bytes, ids: torch.Tensor | Iterable[int]) -> str:
    """HMAC-SHA256 (hex) of the sorted ids joined by commas: the same for any order of the same ids (a set, so
    repeated ids count once)."""
    values = sorted(set(_as_ids(ids, "set_hash").tolist()))
    return hmac.new(_check_key(key), ",".join(map(str, values)).encode("ascii"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short public fingerprint of the key (an HMAC of a constant), to detect a ledger read with the wrong key."""
    return hmac.new(_check_key(key), _KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:16]


def genesis(key: bytes) -> str:
    """The `prev` of a ledger's first line: an HMAC of a constant, so the first line is bound to the key too."""
    return hmac.new(_check_key(key), _GENESIS_MESSAGE, hashlib.sha256).hexdigest()


def line_mac(key: bytes, content: dict) -> str:
    """HMAC-SHA256 (hex) of a line's canonical content (every field but `mac`, JSON with sorted keys)."""
    body = {name: value for name, value in content.items() if name != "mac"}
    return hmac.new(_check_key(key), _canonical(body).encode("ascii"), hashlib.sha256).hexdigest()


def _no_constant(name: str):
    """JSON's NaN / Infinity are never written (non-finite floats are stored as strings): refuse them on read."""
    raise ValueError(f"{name} is not a JSON value")


def _canonical(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


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


def _check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not request_id.strip():
        raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
    return request_id.strip()


def _unique_ids(request_id: str, ids) -> list[int]:
    values = _as_ids(ids, f"ledger record '{request_id}'").tolist()
    if not values:
        raise ValueError(f"ledger record '{request_id}': no ids")
    if len(set(values)) != len(values):
        repeated = sorted(value for value in set(values) if values.count(value) > 1)
        raise ValueError(f"ledger record '{request_id}': {len(repeated)} id(s) repeated: {_first(repeated)}")
    return values


# -- the state machine -------------------------------------------------------------------------------------------

@dataclass
class Attempt:
    """One attempt at serving a request, folded from its lines: how far it got and what it recorded."""

    request_id: str
    attempt: str
    set_hash: str
    id_hashes: list[str]
    count: int
    method: str
    version_before: str | None
    step: str = "intent"
    version: str | None = None           # the registered version
    promote: bool | None = None          # from `recorded`: whether the gates allow promotion
    record: dict = field(default_factory=dict)   # the `recorded` line's gates, metrics and details
    lines: dict[str, int] = field(default_factory=dict)
    times: dict[str, str] = field(default_factory=dict)
    migrated_from: str | None = None

    @property
    def promoted(self) -> bool:
        return self.step == "promoted"

    @property
    def finished(self) -> bool:
        """Promoted, or recorded with promotion refused by a gate; anything else waits to be resumed."""
        return self.promoted or (self.step == "recorded" and self.promote is False)

    @property
    def next_step(self) -> str | None:
        """The step a rerun performs next (None when finished)."""
        return None if self.finished else STEPS[STEPS.index(self.step) + 1]

    def summary(self) -> dict:
        """The attempt as one flat record (for auditors, `find`, reports); no ids in clear."""
        return {
            "request_id": self.request_id, "attempt": self.attempt, "state": self.step,
            "id_hashes": list(self.id_hashes), "set_hash": self.set_hash, "count": self.count,
            "method": self.method, "version_before": self.version_before, "version_after": self.version,
            "gates": self.record.get("gates"), "metrics": self.record.get("metrics"),
            "details": self.record.get("details"), "promoted": self.promoted, "finished": self.finished,
            "time": self.times[self.step], "times": dict(self.times), "lines": dict(self.lines),
            **({"migrated_from": self.migrated_from} if self.migrated_from else {}),
        }


class _State:
    """The verified lines so far and the attempts they describe; `apply` is the one transition check, used both
    when reading (a bad step is a broken ledger) and before writing (a bad step is refused)."""

    def __init__(self, key: bytes) -> None:
        self.lines: list[dict] = []
        self.attempts: dict[str, Attempt] = {}
        self.last_mac = genesis(key)

    def of_request(self, request_id: str) -> list[Attempt]:
        return [attempt for attempt in self.attempts.values() if attempt.request_id == request_id]

    def unfinished(self) -> Attempt | None:
        return next((attempt for attempt in self.attempts.values() if not attempt.finished), None)

    def conflict(self, request_id: str, digest: str) -> Attempt | None:
        """An attempt of `request_id` with another id set, if any."""
        return next((a for a in self.of_request(request_id) if a.set_hash != digest), None)

    def apply(self, entry: dict, number: int) -> None:
        """Fold one line in; ValueError with the problem when the step is not allowed here."""
        step, name, request_id = entry.get("step"), entry.get("attempt"), entry.get("request_id")
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r} (expected one of {list(STEPS)})")
        if not isinstance(name, str) or not name or not isinstance(request_id, str) or not request_id:
            raise ValueError("a line needs a request_id and an attempt")
        if step == "intent":
            self._intent(entry, number)
        else:
            attempt = self.attempts.get(name)
            if attempt is None:
                raise ValueError(f"'{step}' for attempt {name} of request {request_id}, which has no intent line "
                                 f"before it")
            if (request_id, entry.get("set_hash")) != (attempt.request_id, attempt.set_hash):
                raise ValueError(f"'{step}' for attempt {name} names another request or id set than its intent "
                                 f"(line {attempt.lines['intent']})")
            expected = STEPS[STEPS.index(step) - 1]
            if attempt.step != expected:
                raise ValueError(f"'{step}' for request {request_id} (attempt {name}) after '{attempt.step}' (line "
                                 f"{attempt.lines[attempt.step]}): steps go {' -> '.join(STEPS)}, each once")
            getattr(self, f"_{step}")(attempt, entry)
            attempt.step = step
            attempt.lines[step], attempt.times[step] = number, entry.get("time")
        self.lines.append(entry)
        self.last_mac = entry["mac"]

    def _intent(self, entry: dict, number: int) -> None:
        request_id, digest, name = entry["request_id"], entry.get("set_hash"), entry["attempt"]
        hashes, count = entry.get("id_hashes"), entry.get("count")
        if name in self.attempts:
            raise ValueError(f"a second intent for attempt {name} (the first is line "
                             f"{self.attempts[name].lines['intent']})")
        if not isinstance(hashes, list) or not hashes or count != len(hashes) or len(set(hashes)) != len(hashes):
            raise ValueError("an intent needs its id hashes (distinct, non-empty) and their count")
        other = self.conflict(request_id, digest)
        if other is not None:
            raise ValueError(f"conflicting request: request_id '{request_id}' was already recorded at "
                             f"{other.times['intent']} with a different set of ids ({other.count} ids); a "
                             f"request_id must always name the same ids — use a new request_id for a new request")
        served = next((a for a in self.of_request(request_id) if a.promoted), None)
        if served is not None:
            raise ValueError(f"request {request_id} was already promoted (line {served.lines['promoted']}, version "
                             f"{served.version}): it is not replayed")
        busy = self.unfinished()
        if busy is not None:
            raise RequestInFlight(
                f"request {busy.request_id} is unfinished (attempt {busy.attempt}, last step '{busy.step}' at line "
                f"{busy.lines[busy.step]}): serve it again to finish it before request {request_id} starts")
        attempt = Attempt(request_id=request_id, attempt=name, set_hash=digest, id_hashes=list(hashes), count=count,
                          method=entry.get("method"), version_before=entry.get("version_before"),
                          migrated_from=entry.get("migrated_from"))
        attempt.lines["intent"], attempt.times["intent"] = number, entry.get("time")
        self.attempts[name] = attempt

    @staticmethod
    def _registered(attempt: Attempt, entry: dict) -> None:
        if not isinstance(entry.get("version"), str) or not entry["version"]:
            raise ValueError("'registered' needs the version number")
        attempt.version = entry["version"]

    @staticmethod
    def _recorded(attempt: Attempt, entry: dict) -> None:
        if entry.get("version_after") != attempt.version:
            raise ValueError(f"'recorded' names version {entry.get('version_after')!r}, the attempt registered "
                             f"{attempt.version!r}")
        if not isinstance(entry.get("promote"), bool):
            raise ValueError("'recorded' needs promote: true or false")
        attempt.promote = entry["promote"]
        attempt.record = {name: entry.get(name) for name in ("gates", "metrics", "details")}

    @staticmethod
    def _promoted(attempt: Attempt, entry: dict) -> None:
        if not attempt.promote:
            raise ValueError(f"'promoted' for request {attempt.request_id}, whose record (line "
                             f"{attempt.lines['recorded']}) refused promotion")
        if entry.get("version") != attempt.version:
            raise ValueError(f"'promoted' names version {entry.get('version')!r}, the attempt registered "
                             f"{attempt.version!r}")


# -- the ledger --------------------------------------------------------------------------------------------------

class Ledger:
    """The ledger at `path` (JSON lines), authenticated and chained with `key` (see `ledger_key`).

    Per request: `find` (a promoted earlier attempt makes a rerun a no-op), `state` (an unfinished attempt is
    resumed, not restarted), then `begin` (intent) -> `mark_registered` -> `mark_recorded` -> `mark_promoted`, each
    durable before it returns. Every read verifies the whole file and raises `LedgerError` when it is broken."""

    def __init__(self, path: str | Path, key: bytes) -> None:
        self.path = Path(path)
        self.key = _check_key(key)
        self.key_id = key_id(self.key)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}, key_id={self.key_id!r})"

    # -- reading ---------------------------------------------------------------------------------------------------

    def _load(self, data: bytes | None = None) -> _State:
        """Verify every line of the file (or of `data`) and fold the attempts; LedgerError on the first problem."""
        if data is None:
            if not self.path.exists():
                return _State(self.key)
            with open(self.path, "rb") as handle, _locked(handle, shared=True):
                data = handle.read()
        if data and not data.endswith(b"\n"):
            state = self._verify(data[:data.rfind(b"\n") + 1])
            raise LedgerError(
                self.path, len(state.lines) + 1,
                "torn: the last line is unterminated (a write was interrupted); nothing is done with a torn ledger",
                f"Recover with `{RECOVERY_COMMAND}` (it completes the line when it is whole and authentic, else moves "
                f"the fragment to a .torn file: that step never took effect), then serve the request again")
        return self._verify(data)

    def _verify(self, data: bytes) -> _State:
        state = _State(self.key)
        for number, raw in enumerate(data.split(b"\n")[:-1] if data else [], start=1):
            entry = self._parse(raw, number)
            expected = line_mac(self.key, entry)
            if not isinstance(entry.get("mac"), str) or not hmac.compare_digest(entry["mac"], expected):
                raise LedgerError(self.path, number, "authentication failed (MAC mismatch): the line was edited, or "
                                  "forged, after it was written", "Restore the ledger from a backup")
            seq = entry.get("seq")
            if seq != number:
                what = (f"entries {number}..{seq - 1} are missing before it: lines were deleted or moved"
                        if isinstance(seq, int) and seq > number else
                        "it comes after a later entry: lines were reordered or duplicated")
                raise LedgerError(self.path, number, f"out of place: this line is entry {seq} of the chain; {what}",
                                  "Restore the ledger from a backup")
            if entry.get("prev") != state.last_mac:
                raise LedgerError(self.path, number, f"broken chain: the line does not follow line {number - 1} "
                                  f"(a line before it was replaced, deleted or reordered)" if number > 1 else
                                  "broken chain: the first line does not start this key's chain",
                                  "Restore the ledger from a backup")
            try:
                state.apply(entry, number)
            except ValueError as error:
                raise LedgerError(self.path, number, f"invalid step: {error}",
                                  "Restore the ledger from a backup") from None
        return state

    def _parse(self, raw: bytes, number: int) -> dict:
        if not raw.strip():
            raise LedgerError(self.path, number, "an empty line (the file was edited)", "Restore the ledger from a "
                              "backup")
        try:
            entry = json.loads(raw, parse_constant=_no_constant)
        except ValueError as error:
            raise LedgerError(self.path, number, f"not valid JSON ({error})", "Restore the ledger from a backup") \
                from None
        if not isinstance(entry, dict):
            raise LedgerError(self.path, number, "not a ledger entry", "Restore the ledger from a backup")
        if entry.get("key_id") != self.key_id:
            raise LedgerError(self.path, number, f"written with another key (key id {entry.get('key_id')!r}, this "
                              f"key is {self.key_id!r})", "Use the key the ledger was written with")
        if entry.get("schema", 1) == 1 and "mac" not in entry:
            raise LedgerError(self.path, number, "schema 1 (a ledger from before authenticated, chained lines)",
                              f"Convert it once with `{MIGRATE_COMMAND}` (see README, Reliability)")
        if entry.get("schema") != SCHEMA:
            raise LedgerError(self.path, number, f"unknown schema {entry.get('schema')!r} (this code reads "
                              f"schema {SCHEMA})")
        return entry

    def verify(self) -> int:
        """Check the whole ledger; the number of lines, or LedgerError naming the first bad line."""
        return len(self._load().lines)

    def entries(self) -> list[dict]:
        """Every line, oldest first, verified (for auditors: what was forgotten when, no ids in clear)."""
        return [dict(entry) for entry in self._load().lines]

    def attempts(self) -> list[Attempt]:
        """Every attempt, in the order their intents were written."""
        return list(self._load().attempts.values())

    def records(self) -> list[dict]:
        """Every attempt as one flat record (`Attempt.summary`), oldest first."""
        return [attempt.summary() for attempt in self.attempts()]

    def in_flight(self) -> Attempt | None:
        """The unfinished attempt, if any (there is at most one)."""
        return self._load().unfinished()

    def state(self, request_id: str, ids: torch.Tensor | Iterable[int]) -> Attempt | None:
        """The latest attempt of this request (same request_id and id set), finished or not, else None; ValueError
        when `request_id` was recorded with a different id set."""
        request_id = _check_request_id(request_id)
        state, digest = self._load(), set_hash(self.key, ids)
        _raise_conflict(state, request_id, digest)
        same = state.of_request(request_id)
        return same[-1] if same else None

    def find(self, request_id: str, ids: torch.Tensor | Iterable[int], promoted_only: bool = True) -> dict | None:
        """The latest attempt of the same request as a flat record, else None; with `promoted_only` (the default)
        only a promoted attempt counts. Raises ValueError when `request_id` was recorded with a different id set."""
        request_id = _check_request_id(request_id)
        state, digest = self._load(), set_hash(self.key, ids)
        _raise_conflict(state, request_id, digest)
        same = [a for a in state.of_request(request_id) if a.promoted or not promoted_only]
        return same[-1].summary() if same else None

    def forgotten_ids(self, ids: torch.Tensor | Iterable[int], promoted_only: bool = True) -> set[int]:
        """Which of `ids` an earlier request already forgot (by keyed hash; promoted attempts only by default,
        any attempt otherwise)."""
        wanted = {_hash_int(self.key, value): value for value in _as_ids(ids, "forgotten_ids").tolist()}
        seen: set[str] = set()
        for attempt in self._load().attempts.values():
            if attempt.promoted or not promoted_only:
                seen.update(attempt.id_hashes)
        return {value for digest, value in wanted.items() if digest in seen}

    def explain(self, versions: list[dict], request_id: str | None = None) -> tuple[list[dict], list[dict], list[str]]:
        """`classify_versions` against this ledger: (orphans, lost, pending) among the registry's `versions`."""
        state = self._load()
        return classify_versions(list(state.attempts.values()), state.lines, versions, request_id)

    # -- writing ---------------------------------------------------------------------------------------------------

    def begin(self, request_id: str, ids: torch.Tensor | Iterable[int], version_before, method: str,
              when: datetime | None = None) -> Attempt:
        """Write the `intent` line of a new attempt (before anything is registered) and return the attempt.

        Refused (ValueError) for an empty or repeated id list, a request_id already used for other ids, a request
        already promoted (no replay), and while any attempt is unfinished (`RequestInFlight`: resume it instead)."""
        request_id = _check_request_id(request_id)
        values = _unique_ids(request_id, ids)
        if not isinstance(method, str) or not method:
            raise ValueError(f"ledger record '{request_id}': method must be a non-empty string, got {method!r}")
        content = {"step": "intent", "request_id": request_id, "attempt": secrets.token_hex(8),
                   "id_hashes": sorted(_hash_int(self.key, value) for value in values),
                   "set_hash": set_hash(self.key, values), "count": len(values),
                   "version_before": _jsonable(version_before, "version_before"), "method": method}
        return self._append(lambda state: content, when).attempts[content["attempt"]]

    def mark_registered(self, attempt: str, version, when: datetime | None = None) -> Attempt:
        """Write `registered`: the attempt's new version exists in the registry."""
        version = str(_jsonable(version, "version"))
        return self._step(attempt, "registered", lambda current: {"version": version}, when)

    def mark_recorded(self, attempt: str, gates: dict, promote: bool, metrics: dict | None = None,
                      details: dict | None = None, when: datetime | None = None) -> Attempt:
        """Write `recorded`, the full record: the id hashes, versions, method, gate results, metrics (before/after;
        never ids), `details` (anything else worth keeping) and whether the gates allow promotion."""
        if not isinstance(gates, dict):
            raise TypeError(f"ledger record: gates must be a dict, got {type(gates).__name__}")
        promote = _jsonable(promote, "promote")
        if not isinstance(promote, bool):
            raise TypeError(f"ledger record: promote must be a bool, got {promote!r}")
        fields = {"promote": promote, "gates": _jsonable(gates, "gates"),
                  "metrics": _jsonable(metrics or {}, "metrics"), "details": _jsonable(details or {}, "details")}
        return self._step(attempt, "recorded", lambda current: {
            **fields, "id_hashes": list(current.id_hashes), "count": current.count, "method": current.method,
            "version_before": current.version_before, "version_after": current.version}, when)

    def mark_promoted(self, attempt: str, alias: str, when: datetime | None = None) -> Attempt:
        """Write `promoted`: the serving alias now points to the attempt's version."""
        return self._step(attempt, "promoted", lambda current: {"version": current.version, "alias": str(alias)},
                          when)

    def _step(self, attempt: str, step: str, fields: Callable[[Attempt], dict], when: datetime | None) -> Attempt:
        def build(state: _State) -> dict:
            current = state.attempts.get(attempt)
            if current is None:
                raise ValueError(f"ledger {self.path}: no attempt {attempt!r} to mark '{step}'")
            return {"step": step, "request_id": current.request_id, "attempt": attempt,
                    "set_hash": current.set_hash, **fields(current)}

        return self._append(build, when).attempts[attempt]

    def record(self, request_id: str, ids: torch.Tensor | Iterable[int], version_before, version_after,
               gates: dict, promoted: bool, method: str, when: datetime | None = None) -> dict:
        """Write a whole request at once (intent, registered, recorded and, when `promoted`, promoted) and return
        its flat record: for tests and tools, never for the pipeline (whose steps are separate, with the registry's
        actions between them)."""
        request_id = _check_request_id(request_id)
        values = _unique_ids(request_id, ids)
        if not isinstance(gates, dict):
            raise TypeError(f"ledger record '{request_id}': gates must be a dict, got {type(gates).__name__}")
        if not isinstance(_jsonable(promoted, "promoted"), bool):
            raise TypeError(f"ledger record '{request_id}': promoted must be a bool, got {promoted!r}")
        _jsonable(gates, "gates")  # refuse bad gates or times before the first line is written
        _utc_iso(when)
        attempt = self.begin(request_id, values, version_before, method, when).attempt
        self.mark_registered(attempt, version_after, when)
        result = self.mark_recorded(attempt, gates, bool(promoted), when=when)
        if promoted:
            result = self.mark_promoted(attempt, "serving", when)
        return result.summary()

    def _append(self, build: Callable[[_State], dict], when: datetime | None) -> _State:
        """Append one line under an exclusive lock: verify the whole ledger, build the line from its state, check
        the step as a reader would, write it with one `write`, flush and fsync the file, then the directory.
        Returns the new state."""
        time = _utc_iso(when)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle, _locked(handle):
            handle.seek(0)
            state = self._load(handle.read())
            content = {**build(state), "schema": SCHEMA, "time": time, "key_id": self.key_id,
                       "seq": len(state.lines) + 1, "prev": state.last_mac}
            content["mac"] = line_mac(self.key, content)
            line = _canonical(content)
            state.apply(json.loads(line), content["seq"])  # the same check a reader makes: refused steps raise
            handle.write((line + "\n").encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_directory(self.path.parent)
        return state

    # -- recovery --------------------------------------------------------------------------------------------------

    def repair_torn_tail(self) -> str:
        """Recover from an interrupted write: a torn last line that is whole and authentic (only its newline is
        missing) is completed; any other fragment is moved to `<ledger>.torn-<UTC time>` and cut off (the step it
        was writing never took effect, so serving the request again redoes it). Refuses (LedgerError) a ledger whose
        complete lines are broken. Returns what was done."""
        if not self.path.exists():
            return f"ledger {self.path} does not exist: nothing to repair"
        with open(self.path, "r+b") as handle, _locked(handle):
            data = handle.read()
            if not data or data.endswith(b"\n"):
                self._load(data)
                return f"ledger {self.path}: no torn line, nothing to repair"
            cut = data.rfind(b"\n") + 1
            state, fragment = self._load(data[:cut]), data[cut:]
            if self._completes(state, fragment):
                handle.seek(0, os.SEEK_END)
                handle.write(b"\n")
                done = f"ledger {self.path}: line {len(state.lines) + 1} was whole and authentic; completed it"
            else:
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                aside = self.path.with_name(f"{self.path.name}.torn-{stamp}")
                with open(aside, "wb") as torn:
                    torn.write(fragment)
                    torn.flush()
                    os.fsync(torn.fileno())
                handle.truncate(cut)
                done = (f"ledger {self.path}: removed the torn line {len(state.lines) + 1} ({len(fragment)} bytes, "
                        f"kept in {aside.name}); serve the interrupted request again to finish it")
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_directory(self.path.parent)
        return done

    def _completes(self, state: _State, fragment: bytes) -> bool:
        try:
            entry = json.loads(fragment)
            if not isinstance(entry, dict) or entry.get("seq") != len(state.lines) + 1:
                return False
            if entry.get("prev") != state.last_mac or not hmac.compare_digest(str(entry.get("mac")),
                                                                              line_mac(self.key, entry)):
                return False
            state.apply(entry, entry["seq"])
        except ValueError:
            return False
        return True


def _raise_conflict(state: _State, request_id: str, digest: str) -> None:
    other = state.conflict(request_id, digest)
    if other is not None:
        raise ValueError(
            f"conflicting request: request_id '{request_id}' was already recorded at {other.times['intent']} with a "
            f"different set of ids ({other.count} ids); a request_id must always name the same ids — use a new "
            f"request_id for a new request")


def migrate_schema1(path: str | Path, key: bytes) -> str:
    """Convert a schema 1 ledger (one unauthenticated line per processed request) into a chained one, once.

    Each old line becomes an attempt (intent, registered, recorded and, when it was promoted, promoted) with its
    original time and `migrated_from: "schema 1 line N"`. The old lines were never authenticated, so this trusts
    them: check the result against the registry afterwards (`scrub-serve-requests verify`). The old file is kept as
    `<ledger>.schema1.bak`; the new one replaces it atomically. Refuses a file that is not wholly schema 1 (or is
    torn, or written with another key). Returns what was done."""
    path, key = Path(path), _check_key(key)
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise LedgerError(path, data.count(b"\n") + 1, "torn: the last line is unterminated",
                          "Remove the fragment by hand (it was never a processed request), then migrate")
    old = []
    for number, raw in enumerate(data.split(b"\n")[:-1] if data else [], start=1):
        try:
            entry = json.loads(raw)
        except ValueError as error:
            raise LedgerError(path, number, f"not valid JSON ({error})") from None
        if not isinstance(entry, dict) or entry.get("schema", 1) != 1 or "mac" in entry:
            raise LedgerError(path, number, "not a schema 1 line: only a wholly schema 1 ledger is migrated")
        if entry.get("key_id") != key_id(key):
            raise LedgerError(path, number, f"written with another key (key id {entry.get('key_id')!r})")
        old.append((number, entry))
    if not old:
        return f"ledger {path}: nothing to migrate"
    folder = path.parent
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.migrating.")
    os.close(descriptor)
    os.unlink(temporary)
    try:
        new = Ledger(temporary, key)
        for number, entry in old:
            _migrate_one(new, entry, f"schema 1 line {number}")
        backup = path.with_name(f"{path.name}.schema1.bak")
        if backup.exists():
            raise FileExistsError(f"{backup} exists: a migration already ran; move it away first")
        os.link(path, backup)
        os.replace(temporary, path)
        _fsync_directory(folder)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return f"ledger {path}: migrated {len(old)} schema 1 line(s) to the chained schema {SCHEMA}; old file kept as " \
           f"{backup.name}"


def _migrate_one(ledger: Ledger, entry: dict, origin: str) -> None:
    """One schema 1 line as an attempt of the new ledger (its id hashes copied, never recomputed)."""
    try:
        when = datetime.fromisoformat(entry["time"])
        request_id, hashes = entry["request_id"], list(entry["id_hashes"])
        content = {"step": "intent", "request_id": request_id, "attempt": f"migrated-{secrets.token_hex(6)}",
                   "id_hashes": sorted(hashes), "set_hash": entry["set_hash"], "count": len(hashes),
                   "version_before": entry.get("version_before"), "method": entry.get("method") or "unknown",
                   "migrated_from": origin}
        attempt = ledger._append(lambda state: content, when).attempts[content["attempt"]].attempt
        ledger.mark_registered(attempt, entry.get("version_after"), when)
        ledger.mark_recorded(attempt, entry.get("gates") or {}, bool(entry.get("promoted")),
                             details={"migrated_from": origin}, when=when)
        if entry.get("promoted") is True:
            ledger.mark_promoted(attempt, "serving", when)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"ledger migration: {origin} cannot be migrated: {error}") from None


# -- the ledger against the Model Registry ------------------------------------------------------------------------

@dataclass
class Verdict:
    """The ledger checked against the registry: `problems` make it BROKEN; `orphans` are versions no ledger line
    explains (tagged, reported); `notes` are worth knowing but not wrong (an unfinished request, retired versions)."""

    lines: int | None = None  # None when the ledger could not be read
    problems: list[str] = field(default_factory=list)
    orphans: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        """The verdict as lines for a log or a terminal: `OK` or `BROKEN`, then the reasons."""
        head = "OK" if self.ok else "BROKEN"
        counts = f"{len(self.problems)} problem(s), {len(self.orphans)} orphan version(s)"
        out = [f"ledger verdict: {head} ({'unreadable' if self.lines is None else f'{self.lines} line(s)'}, {counts})"]
        out += [f"  problem: {problem}" for problem in self.problems]
        out += [f"  orphan: version {o['version']} ({o['reason']})" for o in self.orphans]
        out += [f"  note: {note}" for note in self.notes]
        return "\n".join(out)

    def as_dict(self) -> dict:
        return {"verdict": "OK" if self.ok else "BROKEN", "lines": self.lines, "problems": list(self.problems),
                "orphans": [dict(o) for o in self.orphans], "notes": list(self.notes)}


def classify_versions(attempts: list[Attempt], lines: list[dict], versions: list[dict],
                      request_id: str | None = None) -> tuple[list[dict], list[dict], list[str]]:
    """Sort registry versions that carry a `request_id` tag (of `request_id` only, when given) by what the ledger
    says of them. `versions` are `{"version": str, "tags": dict}`. Returns (orphans, lost, pending):

    - explained: a `registered` line names the version;
    - pending: tagged with the unfinished attempt, not yet `registered` (a rerun adopts it);
    - orphan: nothing explains it but its intent line is there (e.g. a second version of one attempt), or it was
      tagged orphan already, or it carries no ledger tags (registered outside the ledger);
    - lost: it names an intent line the ledger does not hold (the ledger lost lines, or is another ledger)."""
    by_version = {a.version: a for a in attempts if a.version is not None}
    by_attempt = {a.attempt: a for a in attempts}
    unfinished = {a.attempt: a for a in attempts if not a.finished and a.step == "intent"}
    orphans, lost, pending = [], [], []
    for item in sorted(versions, key=lambda v: int(v["version"])):
        tags = item.get("tags") or {}
        owner = tags.get("request_id")
        if owner is None or (request_id is not None and owner != request_id):
            continue
        version, name = str(item["version"]), tags.get("ledger_attempt")
        explained = by_version.get(version)
        if explained is not None and explained.request_id == owner and name in (None, explained.attempt):
            continue
        if tags.get(ORPHAN_TAG) == "orphan":
            orphans.append({"version": version, "request_id": owner, "reason": tags.get("ledger_note")
                            or "tagged orphan earlier", "tagged": True})
            continue
        if name in unfinished and unfinished[name].request_id == owner:
            pending.append(version)
            continue
        if name is None:
            orphans.append({"version": version, "request_id": owner, "tagged": False,
                            "reason": f"request {owner}: registered without ledger tags, no ledger line names it"})
            continue
        line = _int(tags.get("ledger_line"))
        intent = lines[line - 1] if line is not None and 0 < line <= len(lines) else None
        if intent is None or intent.get("step") != "intent" or intent.get("attempt") != name:
            lost.append({"version": version, "request_id": owner, "reason":
                         f"version {version} was registered for request {owner} after ledger line {line} (attempt "
                         f"{name}), which this ledger of {len(lines)} line(s) does not hold: the ledger lost lines "
                         f"or was replaced; restore it from a backup (or tag the version {ORPHAN_TAG}=orphan to "
                         f"acknowledge it)"})
            continue
        made = by_attempt.get(name)
        other = f"registered version {made.version}" if made and made.version else "registered no version"
        orphans.append({"version": version, "request_id": owner, "tagged": False,
                        "reason": f"request {owner}: its attempt {name} (intent at line {line}) {other}; version "
                                  f"{version} is a second one that no ledger line explains"})
    return orphans, lost, pending


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def check_against_registry(ledger: Ledger, versions: list[dict], serving: str | None) -> Verdict:
    """The ledger (chain and steps) against the registry's `versions` (`{"version", "tags"}`) and the version the
    serving alias points to: every promoted attempt's version exists with matching tags (an earlier promoted
    version may have been retired, which is a note), the alias points to the last promoted version, no version
    claims a ledger line the ledger lacks, and the orphans are listed. Never raises for a broken ledger: that is
    the verdict."""
    verdict = Verdict()
    try:
        state = ledger._load()
    except LedgerError as error:
        verdict.problems.append(str(error))
        return verdict
    verdict.lines = len(state.lines)
    attempts = list(state.attempts.values())
    registry = {str(item["version"]): item.get("tags") or {} for item in versions}
    promoted = [a for a in attempts if a.promoted]
    for attempt in attempts:
        if attempt.version is None:
            continue
        tags = registry.get(attempt.version)
        where = f"request {attempt.request_id} (line {attempt.lines['registered']})"
        if tags is None:
            if attempt is (promoted[-1] if promoted else None):
                verdict.problems.append(f"{where}: its serving version {attempt.version} is not in the registry")
            else:
                verdict.notes.append(f"{where}: version {attempt.version} is no longer in the registry (retired)")
            continue
        wrong = [f"{name}={tags.get(name)!r} (ledger: {value!r})" for name, value in
                 (("request_id", attempt.request_id), ("ledger_attempt", attempt.attempt),
                  ("replaces_version", attempt.version_before))
                 if not (name == "ledger_attempt" and attempt.migrated_from) and tags.get(name) != value]
        if wrong:
            verdict.problems.append(f"{where}: version {attempt.version}'s tags disagree: {', '.join(wrong)}")
    busy = next((a for a in attempts if not a.finished), None)
    expected = promoted[-1].version if promoted else None
    if busy is not None:
        verdict.notes.append(f"request {busy.request_id} is unfinished (last step '{busy.step}' at line "
                             f"{busy.lines[busy.step]}): serve it again to finish it")
    in_progress = busy is not None and busy.step == "recorded" and serving == busy.version
    if in_progress:
        verdict.notes.append(f"the serving alias already points to version {serving} of the unfinished request "
                             f"{busy.request_id}: its promotion was interrupted")
    elif expected is not None and serving != expected:
        verdict.problems.append(f"the serving alias points to version {serving}, but the ledger's last promoted "
                                f"version is {expected} (request {promoted[-1].request_id}, line "
                                f"{promoted[-1].lines['promoted']}): a version the ledger does not account for "
                                f"serves")
    elif expected is None and serving is not None and registry.get(serving, {}).get("request_id"):
        verdict.problems.append(f"the serving alias points to version {serving}, made for request "
                                f"{registry[serving]['request_id']}, which the ledger never promoted")
    orphans, lost, pending = classify_versions(attempts, state.lines, versions)
    verdict.orphans = orphans
    verdict.problems += [item["reason"] for item in lost]
    verdict.notes += [f"version {version} belongs to the unfinished request and will be adopted when it is served "
                      f"again" for version in pending]
    return verdict


# -- files -------------------------------------------------------------------------------------------------------

@contextmanager
def _locked(handle, shared: bool = False):
    """An advisory lock on an open file (shared for readers, exclusive for writers), where the platform has one."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync_directory(directory: Path) -> None:
    """Make the directory entry of a file durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":  # pragma: no cover
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


__all__ = [
    "ENV_VAR", "ORPHAN_TAG", "STEPS", "Attempt", "Ledger", "LedgerError", "RequestInFlight", "Verdict",
    "check_against_registry", "classify_versions", "key_id", "keyed_hash", "ledger_key", "migrate_schema1",
    "set_hash",
]
