"""The conformance kit catches what it claims to catch.

``kit_subjects.py`` runs the whole kit on a correct in-memory backend and on copies of it
with one deliberate bug each. It runs in a pytest subprocess in strict asyncio mode (the
plugin author's default), and each bug must fail the kit tests named here.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SUBJECTS = Path(__file__).with_name("kit_subjects.py")

#: Broken backend -> kit tests that must fail on it (others may fail too).
EXPECTED_FAILURES = {
    "TestNonAtomicClaim": {
        "test_concurrent_claims_on_one_instance_never_overlap",
        "test_concurrent_claims_on_two_instances_never_overlap",
    },
    "TestAckDoesNotDelete": {"test_ack_with_delete_removes_the_records"},
    "TestExportedComeBack": {
        "test_ack_without_delete_keeps_records_but_never_claims_them_again",
        "test_exported_records_stay_exported_after_the_lease",
    },
    "TestEternalLease": {"test_an_expired_lease_is_taken_over", "test_a_claim_holds_the_pending_records_with_a_lease"},
    "TestAckIgnoresTakeover": {"test_an_expired_lease_is_taken_over"},
    "TestLossyRecords": {"test_feedback_round_trips_exactly", "test_transcript_round_trips_exactly"},
    "TestLastOwnerWins": {"test_first_owner_wins_for_good", "test_concurrent_owners_on_two_instances_agree"},
    "TestRacyFlag": {"test_concurrent_swaps_lose_no_update"},
    "TestNewestFirst": {"test_oldest_records_are_claimed_first"},
    "TestWrongNotFoundError": {"test_reading_an_unknown_record_raises_record_not_found"},
    "TestFailsPendingWritesOnClose": {"test_writes_accepted_before_aclose_complete"},
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, tuple[str, str]]]:
    """class name -> test name -> (outcome, message), from one pytest run of the subjects."""
    report = tmp_path_factory.mktemp("kit") / "report.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(SUBJECTS),
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=strict",
            f"--junitxml={report}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=SUBJECTS.parents[2],
    )
    assert report.exists(), f"the kit run produced no report:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome, message = tag, element.get("message", "")
        found.setdefault(cls, {})[case.get("name", "")] = (outcome, message)
    return found


def test_a_correct_backend_passes_every_kit_test(outcomes: dict[str, dict[str, tuple[str, str]]]) -> None:
    results = outcomes["TestMemoryStorage"]
    assert len(results) >= 45
    not_passed = {name: r for name, r in results.items() if r[0] != "passed"}
    # An in-memory store cannot be unreachable: the only tests it skips, and it says why.
    assert not_passed == {
        name: ("skipped", "TestMemoryStorage.make_unreachable_backend returns None")
        for name in (
            "test_an_unreachable_store_raises_storage_unavailable",
            "test_an_unreachable_store_works_once_reachable_without_a_restart",
        )
    }


def test_tests_a_flag_turns_off_are_skipped_naming_the_flag(outcomes: dict[str, dict[str, tuple[str, str]]]) -> None:
    results = outcomes["TestSingleProcessMemory"]
    skipped = {name: msg for name, (outcome, msg) in results.items() if outcome == "skipped"}
    skipped.pop("test_an_unreachable_store_raises_storage_unavailable")
    skipped.pop("test_an_unreachable_store_works_once_reachable_without_a_restart")
    assert "test_concurrent_claims_on_two_instances_never_overlap" in skipped
    assert all("supports_multiple_processes" in msg for msg in skipped.values()), skipped
    assert all(outcome in ("passed", "skipped") for outcome, _ in results.values())


@pytest.mark.parametrize("subject", sorted(EXPECTED_FAILURES))
def test_a_broken_backend_fails_the_kit(subject: str, outcomes: dict[str, dict[str, tuple[str, str]]]) -> None:
    results = outcomes[subject]
    failed = {name for name, (outcome, _) in results.items() if outcome == "failure"}
    missing = EXPECTED_FAILURES[subject] - failed
    assert not missing, f"{subject}: the kit let these pass: {sorted(missing)}"
    errors = {name: msg for name, (outcome, msg) in results.items() if outcome == "error"}
    assert errors == {}, "the kit itself broke (errors, not failures)"
