"""Policy as tables: categories x destinies, level boundaries, lovers, bypass, locals."""

from __future__ import annotations

from typing import Any

import pytest

from contentfilter import config, policy
from contentfilter.model import (
    ContentsCategory as C,
)
from contentfilter.model import (
    Destiny,
    Envelope,
    Finding,
    Recipient,
    ScanResult,
    SpamReport,
    Verdict,
)
from contentfilter.rfc5322 import read_message

RAW = b"Subject: hi\r\n\r\nbody\r\n"
VIRUS = Finding(C.VIRUS, "Eicar-Test-Signature", "clamav")
BANNED = Finding(C.BANNED, "application/octet-stream,.exe,.exe-ms,invoice.exe", "banned")
UNCHECKED = Finding(C.UNCHECKED, "encrypted archive", "banned")
BAD_HEADER = Finding(C.BAD_HEADER, "duplicate header field Subject", "regex")


def decide(
    findings: tuple[Finding, ...] = (),
    score: float | None = None,
    settings: dict[str, Any] | None = None,
    recipients: tuple[str, ...] = ("b@example.com",),
    sender: str = "a@example.org",
    bank: str | None = None,
) -> tuple[Verdict, ...]:
    cfg = config.from_mapping({"scanners": {}, **(settings or {})})
    results = [ScanResult("scan", findings)]
    if score is not None:
        results.append(ScanResult("spamassassin", spam=SpamReport(score, 5.0, (("TEST", score),))))
    message = read_message(
        "1-01", "m", Envelope(sender, tuple(Recipient(r) for r in recipients)), RAW
    )
    context = policy.Context("mx.example.com", cfg.policy, cfg.policy_banks.get(bank or ""))
    return policy.decide(message, results, context)


def one(**kwargs: Any) -> Verdict:
    [verdict] = decide(**kwargs)
    return verdict


def names(verdict: Verdict) -> list[str]:
    return [line.split(b":")[0].decode() for line in verdict.header_lines]


@pytest.mark.parametrize(
    ("findings", "category", "destiny", "reason"),
    [
        ((), C.CLEAN, Destiny.PASS, "CLEAN"),
        ((VIRUS,), C.VIRUS, Destiny.DISCARD, "INFECTED: Eicar-Test-Signature"),
        (
            (BANNED,),
            C.BANNED,
            Destiny.DISCARD,
            "BANNED: application/octet-stream,.exe,.exe-ms,invoice.exe",
        ),
        ((UNCHECKED,), C.UNCHECKED, Destiny.PASS, "UNCHECKED: encrypted archive"),
        ((BAD_HEADER,), C.BAD_HEADER, Destiny.PASS, "BAD HEADER: duplicate header field Subject"),
        ((BANNED, VIRUS), C.VIRUS, Destiny.DISCARD, "INFECTED: Eicar-Test-Signature"),
    ],
)
def test_default_destinies(
    findings: tuple[Finding, ...], category: C, destiny: Destiny, reason: str
) -> None:
    verdict = one(findings=findings)
    assert (verdict.category, verdict.destiny, verdict.reason) == (category, destiny, reason)


@pytest.mark.parametrize("destiny", list(Destiny))
@pytest.mark.parametrize(
    ("name", "finding"),
    [("virus", VIRUS), ("banned", BANNED), ("unchecked", UNCHECKED), ("bad_header", BAD_HEADER)],
)
def test_each_category_takes_its_configured_destiny(
    name: str, finding: Finding, destiny: Destiny
) -> None:
    verdict = one(findings=(finding,), settings={"policy": {"destiny": {name: destiny.value}}})
    assert verdict.destiny is destiny
    assert verdict.category is finding.category


@pytest.mark.parametrize(
    ("score", "category", "flag", "tagged"),
    [
        (1.999, C.CLEAN, None, False),  # below tag_level: no spam headers at all
        (2.0, C.CLEAN, b"NO", False),  # at tag_level: headers, not spam
        (6.3, C.CLEAN, b"NO", False),
        (6.31, C.SPAM, b"YES", True),  # at tag2 (= kill): spammy and spam
        (1000.0, C.SPAM, b"YES", True),
    ],
)
def test_spam_level_boundaries(score: float, category: C, flag: bytes | None, tagged: bool) -> None:
    verdict = one(score=score)
    assert verdict.category is category
    assert verdict.destiny is Destiny.PASS
    flags = [h for h in verdict.header_lines if h.startswith(b"X-Spam-Flag:")]
    assert flags == ([] if flag is None else [b"X-Spam-Flag: " + flag + b"\r\n"])
    assert (verdict.subject_tag == "***SPAM*** ") is tagged


def test_tag2_below_kill_is_spammy() -> None:
    verdict = one(score=7.0, settings={"policy": {"defaults": {"kill_level": 10}}})
    assert verdict.category is C.SPAMMY
    assert verdict.subject_tag == "***SPAM*** "


def test_unset_tag_level_adds_headers_always() -> None:
    verdict = one(score=-5.0, settings={"policy": {"defaults": {"tag_level": "always"}}})
    assert "X-Spam-Status" in names(verdict)


def test_kill_level_applies_spam_destiny() -> None:
    verdict = one(score=50.0, settings={"policy": {"destiny": {"spam": "reject"}}})
    assert (verdict.category, verdict.destiny, verdict.reason) == (C.SPAM, Destiny.REJECT, "spam")


def test_spam_lover_gets_spam_that_others_reject() -> None:
    settings = {
        "policy": {
            "destiny": {"spam": "discard"},
            "recipients": {"lover@example.com": {"spam_lover": True}},
        }
    }
    lover, normal = decide(
        score=50.0, settings=settings, recipients=("lover@example.com", "b@example.com")
    )
    assert lover.destiny is Destiny.PASS and lover.subject_tag == "***SPAM*** "
    assert normal.destiny is Destiny.DISCARD


def test_virus_lover_gets_alert_header_and_tag() -> None:
    verdict = one(
        findings=(VIRUS,),
        settings={"policy": {"recipients": {"@example.com": {"virus_lover": True}}}},
    )
    assert verdict.destiny is Destiny.PASS
    assert "X-Amavis-Alert" in names(verdict)
    assert verdict.subject_tag == "***INFECTED*** "


def test_bypass_spam_checks_means_no_spam_verdict_or_headers() -> None:
    verdict = one(score=1000.0, settings={"policy": {"defaults": {"bypass_spam_checks": True}}})
    assert verdict.category is C.CLEAN
    assert not any(n.startswith("X-Spam") for n in names(verdict))


def test_bypass_virus_checks_ignores_virus() -> None:
    verdict = one(
        findings=(VIRUS,),
        settings={"policy": {"recipients": {"example.com": {"bypass_virus_checks": True}}}},
    )
    assert verdict.destiny is Destiny.PASS


def test_non_local_recipient_gets_no_spam_headers_or_tag() -> None:
    settings = {"policy": {"local_domains": ["example.com"]}}
    local, remote = decide(
        score=1000.0, settings=settings, recipients=("b@example.com", "c@elsewhere.net")
    )
    assert local.subject_tag == "***SPAM*** " and "X-Spam-Flag" in names(local)
    assert remote.subject_tag == "" and names(remote) == ["X-Virus-Scanned"]
    assert local.remove_spam_headers and not remote.remove_spam_headers


def test_subdomain_pattern_in_local_domains() -> None:
    settings = {"policy": {"local_domains": [".example.com"]}}
    verdict = one(score=1000.0, settings=settings, recipients=("b@mail.example.com",))
    assert verdict.subject_tag == "***SPAM*** "


@pytest.mark.parametrize(
    ("senders", "score", "category"),
    [
        ({"allow": ["a@example.org"]}, 1000.0, C.CLEAN),
        ({"deny": ["@example.org"]}, 0.0, C.SPAM),
        ({"score": {"@example.org": 5.0}}, 2.0, C.SPAM),  # 2 + 5 >= 6.31
        ({"score": {"@example.org": -10.0}}, 8.0, C.CLEAN),
    ],
)
def test_sender_lists(senders: dict[str, Any], score: float, category: C) -> None:
    verdict = one(score=score, settings={"policy": {"senders": senders}})
    assert verdict.category is category


def test_most_specific_recipient_entry_wins() -> None:
    settings = {
        "policy": {
            "destiny": {"spam": "discard"},
            "recipients": {
                "@example.com": {"spam_lover": True},
                "strict@example.com": {"spam_lover": False},
            },
        }
    }
    strict, other = decide(
        score=100.0, settings=settings, recipients=("strict@example.com", "other@example.com")
    )
    assert strict.destiny is Destiny.DISCARD
    assert other.destiny is Destiny.PASS


def test_per_recipient_levels() -> None:
    settings = {"policy": {"recipients": {"@example.com": {"tag2_level": 3.0, "kill_level": 3.0}}}}
    verdict = one(score=4.0, settings=settings)
    assert verdict.category is C.SPAM


def test_policy_bank_overrides() -> None:
    settings = {
        "policy_banks": {
            "ORIGINATING": {"overrides": {"bypass_spam_checks": True, "banned_destiny": "reject"}}
        }
    }
    spam = one(score=1000.0, settings=settings, bank="ORIGINATING")
    banned = one(findings=(BANNED,), settings=settings, bank="ORIGINATING")
    assert spam.category is C.CLEAN
    assert banned.destiny is Destiny.REJECT


def test_subject_tag_macros() -> None:
    verdict = one(
        score=12.5, settings={"policy": {"subject_tags": {"spam": "[SPAM _SCORE_/_REQD_] "}}}
    )
    assert verdict.subject_tag == "[SPAM 12.5/6.31] "


@pytest.mark.parametrize(
    ("score", "bank", "sender", "findings", "send", "reason"),
    [
        (20.0, None, "a@example.org", (), False, "reaches the DSN cutoff level 10"),
        (20.0, "ORIGINATING", "a@example.org", (), True, ""),
        (200.0, "ORIGINATING", "a@example.org", (), False, "cutoff level 100"),
        (None, None, "", (), False, "null sender"),
        (None, None, "a@example.org", (VIRUS,), True, ""),  # EICAR does not fake the sender
    ],
)
def test_the_verdict_carries_the_dsn_decision(
    score: float | None,
    bank: str | None,
    sender: str,
    findings: tuple[Finding, ...],
    send: bool,
    reason: str,
) -> None:
    settings = {
        "policy": {"destiny": {"spam": "bounce"}},
        "policy_banks": {"ORIGINATING": {"overrides": {"dsn_cutoff_level": 100}}},
    }
    verdict = one(score=score, settings=settings, bank=bank, sender=sender, findings=findings)
    assert verdict.dsn.send is send
    assert reason in verdict.dsn.reason


@pytest.mark.parametrize(
    ("listener", "client", "bank"),
    [
        ("127.0.0.1:10026", "203.0.113.9", "ORIGINATING"),  # the listener's own bank
        ("127.0.0.1:10024", "192.168.4.5", "MYNETS"),  # chosen by the original client
        ("127.0.0.1:10024", "203.0.113.9", None),
    ],
)
def test_choose_bank(listener: str, client: str, bank: str | None) -> None:
    cfg = config.from_mapping(
        {
            "scanners": {},
            "server": {
                "listen": [
                    "127.0.0.1:10024",
                    {"address": "127.0.0.1:10026", "policy_bank": "ORIGINATING"},
                ]
            },
            "policy_banks": {"ORIGINATING": {}, "MYNETS": {"clients": ["192.168.0.0/16"]}},
        }
    )
    envelope = Envelope(
        "a@example.org",
        (Recipient("b@example.com"),),
        xforward=(("ADDR", client),),
        listener=listener,
    )
    chosen = policy.choose_bank(envelope, cfg.server.listen, cfg.policy_banks)
    assert chosen is (cfg.policy_banks[bank] if bank else None)
