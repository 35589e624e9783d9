"""The credential cache: only the very same credential hits, entries expire, size is bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.stores.credential_cache import MAX_PLAIN_KEY, CredentialCache

ALICE = Principal(user_id="alice", kind=CredentialKind.SESSION, credential_id="s-1")
KEY = Principal(user_id="bob", kind=CredentialKind.API_KEY, credential_id="k-1")


@given(st.text(max_size=3000), st.text(max_size=3000))
def test_only_the_very_same_credential_hits(a: str, b: str) -> None:
    cache = CredentialCache()
    cache.put(cache.key("C", a), ALICE, now=0, revocable=False)
    hit = cache.get(cache.key("C", b), now=1)
    assert (hit is ALICE) == (a == b)
    # Where it came from is part of the key: a cookie never serves an Authorization header.
    assert cache.get(cache.key("A", a), now=1) is None


def test_long_credentials_are_kept_as_their_hash() -> None:
    short, long = "x" * MAX_PLAIN_KEY, "x" * (MAX_PLAIN_KEY + 1)
    assert CredentialCache.key("C", short) == "C" + short
    key = CredentialCache.key("C", long)
    assert isinstance(key, bytes)
    assert len(key) == 32
    assert key != CredentialCache.key("C", long[:-1] + "y")
    assert key != CredentialCache.key("A", long)


def test_entries_expire_with_the_credential_or_the_ttl() -> None:
    cache = CredentialCache(ttl_s=60, revocable_ttl_s=5)
    expiring = Principal(user_id="carol", kind=CredentialKind.AUTH0, expires_at=130.0)
    cache.put("C1", ALICE, now=100, revocable=False)
    cache.put("A2", KEY, now=100, revocable=True)
    cache.put("A3", expiring, now=100, revocable=False)
    assert cache.get("C1", now=159.9) is ALICE
    assert cache.get("C1", now=160) is None
    assert cache.get("A2", now=104.9) is KEY
    assert cache.get("A2", now=105) is None
    assert cache.get("A3", now=129.9) is expiring
    assert cache.get("A3", now=130) is None
    assert len(cache) == 0  # an expired entry is dropped when met


def test_an_already_expired_credential_is_not_kept() -> None:
    cache = CredentialCache()
    cache.put("C", Principal(user_id="d", kind=CredentialKind.SESSION, expires_at=50.0), now=50,
              revocable=False)  # fmt: skip
    assert len(cache) == 0


def test_full_cache_drops_its_oldest_entries() -> None:
    cache = CredentialCache(max_entries=2)
    cache.put("C1", ALICE, now=0, revocable=False)
    cache.put("A2", KEY, now=0, revocable=True)
    cache.put("C3", ALICE, now=0, revocable=False)
    assert cache.get("C1", now=1) is None
    assert cache.get("A2", now=1) is KEY
    assert cache.get("C3", now=1) is ALICE
    off = CredentialCache(max_entries=0)
    off.put("C1", ALICE, now=0, revocable=False)
    assert len(off) == 0


def test_forget_drops_every_entry_of_a_revoked_credential() -> None:
    cache = CredentialCache()
    for key in ("A1", "A2"):  # the same API key presented two ways
        cache.put(key, KEY, now=0, revocable=True)
    cache.put("C3", ALICE, now=0, revocable=False)
    cache.forget("k-1")
    assert cache.get("A1", now=1) is None
    assert cache.get("A2", now=1) is None
    assert cache.get("C3", now=1) is ALICE


@pytest.mark.parametrize("evicted_first", [True, False])
def test_eviction_keeps_the_revocation_index_consistent(evicted_first: bool) -> None:
    cache = CredentialCache(max_entries=1)
    cache.put("A1", KEY, now=0, revocable=True)
    if evicted_first:
        cache.put("C2", ALICE, now=0, revocable=False)  # evicts A1
    cache.forget("k-1")
    assert cache.get("A1", now=1) is None
    assert (cache.get("C2", now=1) is ALICE) == evicted_first
