"""The deletion ledger cannot lie: every line authenticated and chained, so an edit, a deleted, reordered or torn
line is refused with its line number; steps go intent -> registered -> recorded -> promoted, once each; a promoted
request is never replayed; old unchained ledgers are refused and migrated once; and the ledger's verdict against
the Model Registry (library side, registry given as data)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from scrub_unlearning.serving import (
    Ledger,
    LedgerError,
    RequestInFlight,
    check_against_registry,
    keyed_hash,
    migrate_schema1,
    set_hash,
)
from scrub_unlearning.serving.ledger import genesis, key_id, line_mac

KEY = bytes(range(32))
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
PASSED = {"enabled": True, "passed": True, "checks": {}}


def served(ledger: Ledger, request_id: str, ids: list[int], version_before: str, version: str,
           promoted: bool = True) -> dict:
    """A request taken through its steps as the pipeline does."""
    attempt = ledger.begin(request_id, ids, version_before, "scrub_r", when=WHEN).attempt
    ledger.mark_registered(attempt, version, when=WHEN)
    ledger.mark_recorded(attempt, PASSED if promoted else {"enabled": True, "passed": False, "checks": {}},
                         promoted, metrics={"after": {"mia_basic": float("nan")}}, when=WHEN)
    if promoted:
        ledger.mark_promoted(attempt, "serving", when=WHEN)
    return ledger.find(request_id, ids, promoted_only=False)


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    ledger = Ledger(tmp_path / "audit" / "ledger.jsonl", KEY)
    served(ledger, "R1", [1, 2, 3], "1", "2")
    served(ledger, "R2", [4], "2", "3")
    return ledger


def lines(ledger: Ledger) -> list[dict]:
    return [json.loads(line) for line in ledger.path.read_text().splitlines()]


def write(ledger: Ledger, entries: list[dict]) -> None:
    ledger.path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def refused(ledger: Ledger, line: int, *words: str) -> str:
    """Every way of acting on the ledger refuses with the line number and the words; the message."""
    with pytest.raises(LedgerError) as error:
        ledger.find("R9", [9])
    message = str(error.value)
    assert error.value.line == line and f"line {line}:" in message, message
    assert all(word in message for word in words), message
    for action in (lambda: ledger.forgotten_ids([1]), ledger.entries, ledger.in_flight,
                   lambda: ledger.begin("R9", [9], "3", "scrub_r")):
        with pytest.raises(LedgerError):
            action()
    return message


# -- the chain -----------------------------------------------------------------------------------------------------

def test_every_line_is_a_step_authenticated_and_chained(ledger):
    entries = lines(ledger)
    assert [e["step"] for e in entries] == ["intent", "registered", "recorded", "promoted"] * 2
    assert [e["seq"] for e in entries] == list(range(1, 9))
    assert entries[0]["prev"] == genesis(KEY)
    assert all(later["prev"] == earlier["mac"] for earlier, later in zip(entries[:-1], entries[1:], strict=True))
    assert all(e["mac"] == line_mac(KEY, e) and e["key_id"] == key_id(KEY) for e in entries)
    record = ledger.find("R1", [3, 2, 1])
    assert record["promoted"] and record["count"] == 3 and record["version_after"] == "2"
    assert record["id_hashes"] == sorted(keyed_hash(KEY, i) for i in (1, 2, 3))
    assert record["set_hash"] == set_hash(KEY, [1, 2, 3])
    assert record["lines"] == {"intent": 1, "registered": 2, "recorded": 3, "promoted": 4}
    assert ledger.forgotten_ids([1, 4, 5]) == {1, 4}


@pytest.mark.parametrize("line, field, value", [
    (3, "promote", False),                  # promoted flipped in the record
    (4, "version", "7"),                    # the promoted version
    (1, "count", 30),                       # the count
    (5, "id_hashes", ["0" * 64]),           # which ids
    (7, "gates", {"passed": True}),         # the gate results
    (2, "time", "2020-01-01T00:00:00+00:00"),
])
def test_an_edited_field_is_refused_with_its_line(ledger, line, field, value):
    entries = lines(ledger)
    entries[line - 1][field] = value
    write(ledger, entries)
    refused(ledger, line, "authentication failed", "edited")


def test_a_line_without_its_mac_or_with_another_key_is_refused(ledger, tmp_path):
    entries = lines(ledger)
    del entries[5]["mac"]
    write(ledger, entries)
    refused(ledger, 6, "authentication failed")
    with pytest.raises(LedgerError, match="line 1: written with another key"):
        Ledger(ledger.path, b"\x01" * 32).entries()


@pytest.mark.parametrize("deleted", [0, 2, 3, 6])
def test_a_deleted_line_is_refused(ledger, deleted):
    entries = lines(ledger)
    del entries[deleted]
    write(ledger, entries)
    refused(ledger, deleted + 1, "out of place", "deleted")


def test_reordered_lines_are_refused(ledger):
    entries = lines(ledger)
    entries[4], entries[5] = entries[5], entries[4]
    write(ledger, entries)
    refused(ledger, 5, "out of place", "entry 6")
    entries = lines(ledger)
    write(ledger, entries[4:] + entries[:4])  # whole requests swapped
    refused(ledger, 1, "out of place")


def test_a_line_replaced_by_an_authentic_line_of_another_ledger_is_refused(ledger, tmp_path):
    other = Ledger(tmp_path / "other.jsonl", KEY)
    served(other, "R1", [1, 2, 3], "1", "2")
    served(other, "R2", [4], "2", "9")
    entries = lines(ledger)
    entries[5] = lines(other)[5]  # same key, same position, other chain
    write(ledger, entries)
    refused(ledger, 6, "broken chain")


def test_a_torn_last_line_is_refused_and_repaired(ledger):
    whole = ledger.path.read_bytes()
    ledger.path.write_bytes(whole + b'{"step": "intent", "request_id": "R3", "id_ha')
    message = refused(ledger, 9, "torn", "repair-ledger")
    assert "serve the request again" in message
    assert "removed the torn line 9" in ledger.repair_torn_tail()
    assert ledger.path.read_bytes() == whole
    (aside,) = ledger.path.parent.glob("ledger.jsonl.torn-*")
    assert aside.read_bytes().startswith(b'{"step": "intent"')
    assert len(ledger.entries()) == 8 and "nothing to repair" in ledger.repair_torn_tail()


def test_a_whole_line_missing_only_its_newline_is_completed(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", KEY)
    served(ledger, "R1", [1], "1", "2")
    ledger.path.write_bytes(ledger.path.read_bytes()[:-1])  # the crash came between the line and its newline
    refused(ledger, 4, "torn")
    assert "completed" in ledger.repair_torn_tail()
    assert ledger.find("R1", [1])["promoted"]


def test_an_authentic_line_that_breaks_the_step_order_is_refused(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", KEY)
    served(ledger, "R1", [1], "1", "2", promoted=False)
    forged = {"step": "promoted", "request_id": "R1", "attempt": lines(ledger)[0]["attempt"],
              "set_hash": set_hash(KEY, [1]), "version": "2", "alias": "serving", "schema": 2, "time": "t",
              "key_id": key_id(KEY), "seq": 4, "prev": lines(ledger)[-1]["mac"]}
    forged["mac"] = line_mac(KEY, forged)
    with open(ledger.path, "a") as handle:
        handle.write(json.dumps(forged) + "\n")
    refused(ledger, 4, "invalid step", "refused promotion")


# -- the steps -----------------------------------------------------------------------------------------------------

def test_steps_go_in_order_each_once(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", KEY)
    attempt = ledger.begin("R1", [1, 2], "1", "scrub_r").attempt
    with pytest.raises(ValueError, match="'recorded' .* after 'intent'"):
        ledger.mark_recorded(attempt, PASSED, True)
    ledger.mark_registered(attempt, "2")
    with pytest.raises(ValueError, match="'registered' .* after 'registered'"):
        ledger.mark_registered(attempt, "3")
    ledger.mark_recorded(attempt, {"enabled": True, "passed": False, "checks": {}}, False)
    with pytest.raises(ValueError, match="refused promotion"):
        ledger.mark_promoted(attempt, "serving")
    assert [e["step"] for e in lines(ledger)] == ["intent", "registered", "recorded"]
    assert ledger.in_flight() is None and ledger.find("R1", [1, 2]) is None  # finished, not promoted: retry allowed
    retry = ledger.begin("R1", [2, 1], "1", "scrub_r")
    assert retry.attempt != attempt and ledger.in_flight().attempt == retry.attempt


def test_a_promoted_request_is_never_replayed(ledger):
    with pytest.raises(ValueError, match="R1 was already promoted .*line 4.* not replayed"):
        ledger.begin("R1", [1, 2, 3], "3", "scrub_r")
    with pytest.raises(ValueError, match="conflicting request"):
        ledger.begin("R1", [1, 2], "3", "scrub_r")
    assert len(lines(ledger)) == 8


def test_an_unfinished_request_blocks_the_others(ledger):
    attempt = ledger.begin("R3", [5, 6], "3", "scrub_r")
    with pytest.raises(RequestInFlight, match="R3 is unfinished .*'intent' at line 9"):
        ledger.begin("R4", [7], "3", "scrub_r")
    with pytest.raises(RequestInFlight):
        ledger.begin("R3", [5, 6], "3", "scrub_r")  # resumed, never restarted
    assert ledger.state("R3", [6, 5]).attempt == attempt.attempt and ledger.forgotten_ids([5]) == set()


# -- schema 1 --------------------------------------------------------------------------------------------------------

def schema1_line(request_id: str, ids: list[int], after: str, promoted: bool) -> str:
    return json.dumps({"schema": 1, "request_id": request_id, "id_hashes": sorted(keyed_hash(KEY, i) for i in ids),
                       "set_hash": set_hash(KEY, ids), "count": len(ids), "version_before": "1",
                       "version_after": after, "gates": {"passed": promoted}, "promoted": promoted,
                       "method": "scrub_r", "time": "2025-01-02T03:04:05+00:00", "key_id": key_id(KEY)}) + "\n"


def test_a_schema_1_ledger_is_refused_then_migrated_once(tmp_path):
    path = tmp_path / "ledger.jsonl"
    old = schema1_line("A", [1, 2], "2", False) + schema1_line("A", [1, 2], "3", True)
    path.write_text(old)
    ledger = Ledger(path, KEY)
    with pytest.raises(LedgerError, match="line 1: schema 1 .*migrate-ledger"):
        ledger.find("A", [1, 2])
    assert "migrated 2 schema 1 line(s)" in migrate_schema1(path, KEY)
    assert (tmp_path / "ledger.jsonl.schema1.bak").read_text() == old
    record = ledger.find("A", [1, 2])
    assert record["version_after"] == "3" and record["migrated_from"] == "schema 1 line 2"
    assert ledger.forgotten_ids([1, 2, 3]) == {1, 2} and len(ledger.entries()) == 7
    with pytest.raises(LedgerError, match="not a schema 1 line"):
        migrate_schema1(path, KEY)


# -- against the registry --------------------------------------------------------------------------------------------

def registry_of(ledger: Ledger) -> list[dict]:
    """What the registry holds after the pipeline served the ledger's requests (the Original is version 1)."""
    versions = [{"version": "1", "tags": {"role": "original"}}]
    for record in ledger.records():
        versions.append({"version": record["version_after"], "tags": {
            "role": "unlearned", "request_id": record["request_id"], "ledger_attempt": record["attempt"],
            "ledger_line": str(record["lines"]["intent"]), "replaces_version": record["version_before"]}})
    return versions


def test_the_verdict_on_a_good_ledger_is_ok(ledger):
    verdict = check_against_registry(ledger, registry_of(ledger), "3")
    assert verdict.ok and verdict.lines == 8 and not verdict.orphans, verdict.text()
    assert verdict.text().startswith("ledger verdict: OK")


def test_the_verdict_names_what_is_broken(ledger):
    versions = registry_of(ledger)
    wrong_alias = check_against_registry(ledger, versions, "2")
    assert not wrong_alias.ok and "serving alias points to version 2" in wrong_alias.text()
    versions[2]["tags"]["request_id"] = "R7"
    assert "tags disagree: request_id='R7'" in check_against_registry(ledger, versions, "3").text()
    missing = check_against_registry(ledger, registry_of(ledger)[:2], "3")
    assert "serving version 3 is not in the registry" in missing.text()

    entries = lines(ledger)
    write(ledger, entries[:4])  # R2's lines cut off the end: the chain alone cannot see it, the registry can
    cut = check_against_registry(ledger, versions[:2] + registry_of(Ledger(ledger.path, KEY))[2:] + [
        {"version": "3", "tags": {"request_id": "R2", "ledger_attempt": entries[4]["attempt"], "ledger_line": "5"}}],
        "3")
    assert not cut.ok and "ledger line 5" in cut.text() and "lost lines" in cut.text()

    entries[2]["promote"] = False
    write(ledger, entries)
    edited = check_against_registry(ledger, versions, "3")
    assert edited.text().startswith("ledger verdict: BROKEN") and "line 3: authentication failed" in edited.text()


def test_the_verdict_lists_orphans_and_an_unfinished_request(ledger):
    versions = registry_of(ledger) + [{"version": "4", "tags": {"request_id": "R9", "role": "unlearned"}}]
    attempt = ledger.begin("R3", [7], "3", "scrub_r")
    versions.append({"version": "5", "tags": {"request_id": "R3", "ledger_attempt": attempt.attempt,
                                              "ledger_line": "9"}})
    verdict = check_against_registry(ledger, versions, "3")
    assert verdict.ok, verdict.text()
    assert [o["version"] for o in verdict.orphans] == ["4"] and "without ledger tags" in verdict.orphans[0]["reason"]
    assert "R3 is unfinished" in verdict.text() and "version 5 belongs to the unfinished request" in verdict.text()
