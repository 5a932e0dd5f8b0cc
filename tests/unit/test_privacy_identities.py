"""The identity rules privacy relies on: one normalisation (as on push), the hashing rule, and the forms an
erasure searches each segment in."""

import hashlib

from gateway.ingest.upload import hash_identity, lowercases, normalise_identity
from gateway.privacy.identities import erase_form, forms, identity_hashes


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_hashing_follows_normalisation_and_keeps_a_hash_as_sent():
    assert normalise_identity(" Ann@Example.com ", True, True) == sha("ann@example.com")
    assert normalise_identity(" Ann@Example.com ", False, True) == sha("Ann@Example.com")
    assert normalise_identity("  ", True, True) == ""  # empty stays empty (an invalid row)
    assert hash_identity("AB" * 32) == "AB" * 32
    assert hash_identity("ab" * 31 + "zz") == sha("ab" * 31 + "zz")  # not hex: hashed
    assert hash_identity("ab" * 33) == sha("ab" * 33)  # 66 hex characters: not a SHA-256, hashed


def test_each_segment_is_searched_in_the_form_it_stores():
    plain, lowered, plain_sha, lowered_sha = forms(" Ann@Example.com ")
    assert (plain, lowered, plain_sha, lowered_sha) == ("Ann@Example.com", "ann@example.com",
                                                        sha("Ann@Example.com"), sha("ann@example.com"))
    stored = {"plain": plain, "lowered": lowered, "plain_sha256": plain_sha, "lowered_sha256": lowered_sha}
    for attribute, hashing in (("Email", None), ("customer_id", None), ("E-Mail Address", "sha256"),
                               ("id", "sha256")):
        pushed = normalise_identity(" Ann@Example.com ", lowercases(attribute), hashing is not None)
        assert stored[erase_form(attribute, hashing)] == pushed, (attribute, hashing)
    assert forms(" \t") is None


def test_the_hashes_kept_are_those_of_the_identity_as_sent_and_lowered():
    assert identity_hashes(" Ann@x.com") == sorted({sha("Ann@x.com"), sha("ann@x.com")})
    assert identity_hashes("AB" * 32) == ["ab" * 32]
    assert identity_hashes("") == []
