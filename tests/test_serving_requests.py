"""Deletion requests and the ledger: every bad request fails whole with an error naming the bad values, and the
ledger never holds ids in clear."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from datetime import datetime, timedelta, timezone

import pytest
import torch

from scrub_unlearning.serving import (
    DeletionRequest,
    Ledger,
    LedgerError,
    keyed_hash,
    ledger_key,
    read_request,
    set_hash,
    validate_request,
)

KEY = bytes(range(32))
TRAINING_IDS = torch.arange(0, 5000, dtype=torch.int64)
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _write(tmp_path, text, name="request.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _record(ledger, request_id, ids, promoted=True, **changes):
    arguments = dict(version_before="3", version_after="4", gates={"forget_error": 0.91, "passed": True},
                     promoted=promoted, method="scrub", when=WHEN)
    arguments.update(changes)
    return ledger.record(request_id, ids, **arguments)


# -- read_request --------------------------------------------------------------------------------------------------

def test_good_request_round_trip(tmp_path):
    path = _write(tmp_path, "request_id,id\nREQ-7,42\nREQ-7,3\nREQ-7,1000\n")
    request = read_request(path)
    assert request.request_id == "REQ-7"
    assert request.ids.dtype == torch.int64
    assert request.ids.tolist() == [3, 42, 1000]
    assert request == DeletionRequest("REQ-7", torch.tensor([1000, 3, 42]))
    validate_request(request, TRAINING_IDS)
    validate_request(request, TRAINING_IDS, already_forgotten={7, 8})


def test_request_tolerates_bom_whitespace_blank_lines_and_extra_columns(tmp_path):
    path = tmp_path / "request.csv"
    path.write_bytes("\ufeffid, request_id ,note\n 5 , R1 ,x\n\n6,R1,y\n".encode())
    request = read_request(path)
    assert (request.request_id, request.ids.tolist()) == ("R1", [5, 6])


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_request(path)


def test_missing_column(tmp_path):
    path = _write(tmp_path, "request_id,example\nR1,5\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['id'\]") as error:
        read_request(path)
    assert str(path) in str(error.value)


def test_more_than_one_request_id(tmp_path):
    path = _write(tmp_path, "request_id,id\nR1,5\nR2,6\nR1,7\n")
    with pytest.raises(ValueError, match="2 request_ids: \\['R1', 'R2'\\]") as error:
        read_request(path)
    assert str(path) in str(error.value)


def test_empty_request_id(tmp_path):
    path = _write(tmp_path, "request_id,id\nR1,5\n,6\n")
    with pytest.raises(ValueError, match=r"empty request_id on line\(s\) \[3\]"):
        read_request(path)


@pytest.mark.parametrize("value", ["1.5", "abc", "-3", "1e3", "", "99999999999999999999"])
def test_non_integer_ids(tmp_path, value):
    path = _write(tmp_path, f"request_id,id\nR1,5\nR1,{value}\n")
    with pytest.raises(ValueError, match="not non-negative integers") as error:
        read_request(path)
    assert repr(value) in str(error.value) and "line 3" in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("text", ["request_id,id\n", "request_id,id\n\n\n"])
def test_empty_request(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match="the request is empty") as error:
        read_request(path)
    assert str(path) in str(error.value)


def test_empty_file(tmp_path):
    path = _write(tmp_path, "")
    with pytest.raises(ValueError, match="the file is empty") as error:
        read_request(path)
    assert str(path) in str(error.value)


def test_duplicate_ids_are_listed(tmp_path):
    rows = "".join(f"R1,{value}\n" for value in [9, 4, 9, 4, 4, 1, *range(100, 112), *range(100, 112)])
    path = _write(tmp_path, "request_id,id\n" + rows)
    with pytest.raises(ValueError, match=r"14 id\(s\) appear more than once: \[4, 9, 100, 101, .*\.\.\.\]") as error:
        read_request(path)
    assert str(path) in str(error.value)


def test_row_with_too_many_fields(tmp_path):
    path = _write(tmp_path, "request_id,id\nR1,5,oops\n")
    with pytest.raises(ValueError, match=r"line\(s\) \[2\] have more fields"):
        read_request(path)


def test_deletion_request_checks_its_ids():
    with pytest.raises(ValueError, match=r"appear more than once: \[2\]"):
        DeletionRequest("R1", torch.tensor([2, 1, 2]))
    with pytest.raises(ValueError, match="empty"):
        DeletionRequest("R1", torch.tensor([], dtype=torch.int64))
    with pytest.raises(TypeError, match="integers"):
        DeletionRequest("R1", torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"non-negative.*\[-1\]"):
        DeletionRequest("R1", [3, -1])
    with pytest.raises(ValueError, match="request_id"):
        DeletionRequest("  ", [3])


# -- validate_request ----------------------------------------------------------------------------------------------

def test_unknown_ids_are_listed_with_their_count():
    request = DeletionRequest("R1", torch.tensor([1, 2, *range(6000, 6015)]))
    message = r"'R1': 15 of 17 id\(s\) are not in the training set: \[6000, 6001, .*\.\.\.\]"
    with pytest.raises(ValueError, match=message):
        validate_request(request, TRAINING_IDS)


def test_already_forgotten_ids_are_listed():
    request = DeletionRequest("R2", torch.tensor([10, 11, 12]))
    with pytest.raises(ValueError, match=r"2 id\(s\) were already forgotten by an earlier request: \[10, 12\]"):
        validate_request(request, TRAINING_IDS, already_forgotten={12, 10, 400})


def test_both_problems_are_reported_together():
    request = DeletionRequest("R3", torch.tensor([10, 9999]))
    with pytest.raises(ValueError) as error:
        validate_request(request, TRAINING_IDS, already_forgotten={10})
    assert "[9999]" in str(error.value) and "already forgotten" in str(error.value) and "[10]" in str(error.value)


# -- hashes --------------------------------------------------------------------------------------------------------

def test_keyed_hash_is_hmac_sha256_of_the_decimal_string():
    assert keyed_hash(KEY, 123) == hmac.new(KEY, b"123", hashlib.sha256).hexdigest()
    assert keyed_hash(KEY, torch.tensor(123)) == keyed_hash(KEY, 123)
    assert keyed_hash(b"another key" * 3, 123) != keyed_hash(KEY, 123)


def test_set_hash_is_order_independent():
    expected = hmac.new(KEY, b"3,42,1000", hashlib.sha256).hexdigest()
    assert set_hash(KEY, [1000, 3, 42]) == expected
    assert set_hash(KEY, torch.tensor([42, 1000, 3])) == expected
    assert set_hash(KEY, [3, 42]) != expected


# -- ledger --------------------------------------------------------------------------------------------------------

def test_ledger_record_find_and_forgotten_ids(tmp_path):
    ledger = Ledger(tmp_path / "audit" / "ledger.jsonl", KEY)
    assert ledger.entries() == [] and ledger.find("R1", [1, 2]) is None and ledger.forgotten_ids([1, 2]) == set()
    entry = _record(ledger, "R1", torch.tensor([42, 7, 1000]))
    assert entry["request_id"] == "R1" and entry["count"] == 3 and entry["promoted"] is True
    assert entry["id_hashes"] == sorted(keyed_hash(KEY, value) for value in (7, 42, 1000))
    assert entry["set_hash"] == set_hash(KEY, [7, 42, 1000])
    assert (entry["version_before"], entry["version_after"], entry["method"]) == ("3", "4", "scrub")
    assert entry["gates"] == {"forget_error": 0.91, "passed": True}
    assert entry["time"] == "2025-01-02T03:04:05+00:00"

    assert ledger.find("R1", [1000, 42, 7]) == entry  # same request, any order: a rerun is a no-op
    assert ledger.find("R2", [1000, 42, 7]) is None
    assert ledger.forgotten_ids(torch.tensor([7, 8, 1000])) == {7, 1000}
    assert ledger.records() == [entry]
    assert [line["step"] for line in ledger.entries()] == ["intent", "registered", "recorded", "promoted"]

    # Re-reading from disk, with a fresh object, gives the same answers.
    again = Ledger(ledger.path, KEY)
    assert again.records() == [entry] and again.forgotten_ids([42]) == {42}


def test_reused_request_id_with_other_ids_is_a_conflict(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", KEY)
    _record(ledger, "R1", [1, 2, 3])
    with pytest.raises(ValueError, match="conflicting request.*'R1'"):
        ledger.find("R1", [1, 2])
    with pytest.raises(ValueError, match="conflicting request.*'R1'"):
        _record(ledger, "R1", [1, 2, 4])
    assert len(ledger.records()) == 1


def test_unpromoted_entries_do_not_count_as_forgotten(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", KEY)
    failed = _record(ledger, "R1", [5, 6], promoted=False, gates={"passed": False})
    assert ledger.find("R1", [5, 6]) is None
    assert ledger.find("R1", [5, 6], promoted_only=False) == failed
    assert ledger.forgotten_ids([5, 6]) == set() and ledger.forgotten_ids([5, 6], promoted_only=False) == {5, 6}
    retried = _record(ledger, "R1", [6, 5], when=WHEN + timedelta(hours=1))  # the retry is recorded, not a conflict
    assert ledger.find("R1", [5, 6]) == retried and len(ledger.records()) == 2


def test_ledger_refuses_another_key(tmp_path):
    _record(Ledger(tmp_path / "ledger.jsonl", KEY), "R1", [1])
    with pytest.raises(ValueError, match="another key"):
        Ledger(tmp_path / "ledger.jsonl", b"\x01" * 32).forgotten_ids([1])


def test_ledger_rejects_bad_records(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", KEY)
    with pytest.raises(ValueError, match=r"repeated: \[2\]"):
        _record(ledger, "R1", [2, 2])
    with pytest.raises(ValueError, match="no ids"):
        _record(ledger, "R1", [])
    with pytest.raises(ValueError, match="timezone-aware"):
        _record(ledger, "R1", [2], when=datetime(2025, 1, 1))
    with pytest.raises(TypeError, match="arrays are not accepted"):
        _record(ledger, "R1", [2], gates={"ids": torch.tensor([2, 3])})
    assert not ledger.path.exists()


def test_time_is_stored_in_utc(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", KEY)
    paris = timezone(timedelta(hours=1))
    entry = _record(ledger, "R1", [1], when=datetime(2025, 1, 2, 4, 4, 5, tzinfo=paris))
    assert entry["time"] == "2025-01-02T03:04:05+00:00"
    assert _record(ledger, "R2", [2], when=None)["time"].endswith("+00:00")


def test_one_json_line_per_step_and_a_torn_line_blocks_reads_and_writes(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", KEY)
    _record(ledger, "R1", [1])
    _record(ledger, "R2", [2], promoted=False)
    lines = ledger.path.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["R1"] * 4 + ["R2"] * 3
    with open(ledger.path, "a") as handle:
        handle.write('{"request_id": "R3", "id_ha')
    with pytest.raises(LedgerError, match="line 8: torn.*repair-ledger"):
        ledger.entries()
    with pytest.raises(LedgerError, match="line 8: torn"):
        _record(ledger, "R4", [4])


def test_ledger_file_never_holds_ids_in_clear(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", KEY)
    ids = [1234, 56789, 4321987]
    _record(ledger, "REQ-A", ids[:2])
    _record(ledger, "REQ-B", ids[2:], promoted=False)
    text = ledger.path.read_text()
    def in_clear(value, content):  # as a whole JSON value: a number or a string, delimited by JSON punctuation
        return re.search(rf'[\[:,]\s*"?{value}"?\s*[,\]}}]', content) is not None

    assert in_clear(1234, json.dumps({"a": [5, 1234]})) and in_clear(1234, json.dumps({"a": "1234"}))  # the probe works
    for value in ids:
        assert not in_clear(value, text), value

    def values(node):
        if isinstance(node, dict):
            for item in node.values():
                yield from values(item)
        elif isinstance(node, list):
            for item in node:
                yield from values(item)
        else:
            yield node

    found = [value for line in text.splitlines() for value in values(json.loads(line))]
    assert not {str(value) for value in ids} & {str(value) for value in found}


# -- the key -------------------------------------------------------------------------------------------------------

def test_key_from_the_environment_variable_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRUB_LEDGER_KEY", KEY.hex())
    assert ledger_key(key_file=tmp_path / "key") == KEY
    assert not (tmp_path / "key").exists()
    monkeypatch.setenv("MY_KEY", "ab" * 40)
    assert ledger_key("MY_KEY") == b"\xab" * 40


@pytest.mark.parametrize("value, message", [("", "empty"), ("zz" * 32, "not hex"), ("ab" * 8, "at least 32")])
def test_bad_key_in_the_environment(monkeypatch, value, message):
    monkeypatch.setenv("SCRUB_LEDGER_KEY", value)
    with pytest.raises(ValueError, match=message):
        ledger_key()


def test_key_file_is_created_with_mode_0600_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("SCRUB_LEDGER_KEY", raising=False)
    path = tmp_path / "secrets" / "ledger.key"
    key = ledger_key(key_file=path)
    assert len(key) == 32 and path.read_text().strip() == key.hex()
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ledger_key(key_file=path) == key
    assert [p.name for p in path.parent.iterdir()] == ["ledger.key"]  # no temporary file left behind


def test_no_key_source_is_an_error(monkeypatch):
    monkeypatch.delenv("SCRUB_LEDGER_KEY", raising=False)
    with pytest.raises(ValueError, match="SCRUB_LEDGER_KEY"):
        ledger_key()
