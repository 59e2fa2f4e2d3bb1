"""The uploads store (XEP-0363 slots and file metadata): slots of one
account, quotas checked as a slot is added, pending and stored slots,
the expiry sweep's queries, a slot deleted with its account."""

from datetime import datetime, timedelta, timezone

import pytest

from xmppd.storage import QuotaExceeded, StorageError, UserNotFound
from xmppd.storage.kinds import Upload
from xmppd.storage.models import UploadRow

from .conftest import KEYS, row_count

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ALICE = ("alice", "example.org")


def slot(id_, size=10, created=T0, owner=ALICE, **kw):
    return Upload(id_, *owner, kw.pop("filename", f"{id_}.bin"), size,
                  kw.pop("content_type", "application/octet-stream"), created, **kw)


@pytest.fixture
def uploads(store, alice):
    return store.open("uploads")


@pytest.fixture
def bob(store):
    store.open("accounts").create("bob", "example.org", KEYS)
    return ("bob", "example.org")


class TestSlots:
    def test_added_slot_is_pending_and_read_back_in_utc(self, uploads):
        berlin = timezone(timedelta(hours=1))
        uploads.add(slot("s1", filename="päst ë.jpg", content_type="image/jpeg",
                         created=T0.astimezone(berlin)))
        found = uploads.get("s1")
        assert found == Upload("s1", "alice", "example.org", "päst ë.jpg", 10, "image/jpeg",
                               T0, None)
        assert found.created.tzinfo == timezone.utc
        assert uploads.get("nope") is None

    def test_mark_stored_once(self, uploads):
        uploads.add(slot("s1", size=42))
        assert uploads.mark_stored("s1") is True
        assert uploads.get("s1").stored == 42
        assert uploads.mark_stored("s1") is False  # a second upload to the same slot
        assert uploads.mark_stored("absent") is False

    def test_unknown_account(self, uploads):
        with pytest.raises(UserNotFound):
            uploads.add(slot("s1", owner=("nobody", "example.org")))
        assert uploads.get("s1") is None

    def test_duplicate_id_is_refused(self, uploads, bob):
        uploads.add(slot("s1"))
        with pytest.raises(StorageError):
            uploads.add(slot("s1", owner=bob))
        assert uploads.get("s1").username == "alice"

    @pytest.mark.parametrize("bad", [
        {"id_": ""}, {"id_": "x" * 65}, {"filename": ""}, {"filename": "f" * 256},
        {"content_type": ""}, {"content_type": "t" * 256}, {"size": -1}])
    def test_out_of_bounds(self, uploads, bad):
        with pytest.raises(ValueError):
            uploads.add(slot(**{"id_": "s1", **bad}))
        assert uploads.uploads(*ALICE) == []

    def test_uploads_of_one_account_oldest_first(self, uploads, bob):
        uploads.add(slot("b", created=T0 + timedelta(minutes=1)))
        uploads.add(slot("a", created=T0 + timedelta(minutes=2)))
        uploads.add(slot("c", created=T0, owner=bob))
        assert [u.id for u in uploads.uploads(*ALICE)] == ["b", "a"]
        assert [u.id for u in uploads.uploads(*bob)] == ["c"]
        assert uploads.uploads("nobody", "example.org") == []

    def test_deleted_with_the_account(self, backend, store, uploads):
        uploads.add(slot("s1"))
        uploads.mark_stored("s1")
        store.open("accounts").delete(*ALICE)
        assert row_count(backend, UploadRow) == 0
        assert uploads.get("s1") is None


class TestQuotas:
    def test_quota_counts_the_accounts_slots(self, uploads, bob):
        uploads.add(slot("s1", size=60), quota=100)
        uploads.add(slot("s2", size=40, owner=bob), quota=50)  # another account's
        with pytest.raises(QuotaExceeded) as refused:
            uploads.add(slot("s3", size=41), quota=100)
        assert (refused.value.kind, refused.value.retry) == ("quota", None)
        assert uploads.get("s3") is None
        uploads.add(slot("s3", size=40), quota=100)  # exactly the quota
        assert [u.id for u in uploads.uploads(*ALICE)] == ["s1", "s3"]

    def test_expired_pending_slots_do_not_count(self, uploads):
        uploads.add(slot("old", size=60))  # never uploaded
        uploads.add(slot("kept", size=30))
        uploads.mark_stored("kept")
        later = T0 + timedelta(minutes=10)
        with pytest.raises(QuotaExceeded):
            uploads.add(slot("new", size=60, created=later), quota=100)
        uploads.add(slot("new", size=60, created=later), quota=100,
                    pending_since=T0 + timedelta(minutes=5))
        # Only the stored one counts once every pending one has expired.
        with pytest.raises(QuotaExceeded):
            uploads.add(slot("more", size=71, created=later), quota=100,
                        pending_since=later + timedelta(minutes=5))
        uploads.add(slot("more", size=70, created=later), quota=100,
                    pending_since=later + timedelta(minutes=5))

    def test_daily_quota_and_when_to_retry(self, uploads):
        for i, hours in enumerate((0, 2, 5)):
            uploads.add(slot(f"s{i}", size=30, created=T0 + timedelta(hours=hours)))
        now = T0 + timedelta(hours=6)
        with pytest.raises(QuotaExceeded) as refused:
            uploads.add(slot("new", size=50, created=now), daily_quota=100)
        # 90 + 50 - 100 = 40 bytes must leave the last 24 hours: the first
        # two slots, the second at T0 + 2 h.
        assert refused.value.kind == "daily"
        assert refused.value.retry == T0 + timedelta(hours=26)
        assert uploads.get("new") is None
        uploads.add(slot("new", size=50, created=T0 + timedelta(hours=26, seconds=1)),
                    daily_quota=100)

    def test_daily_quota_never_met(self, uploads):
        with pytest.raises(QuotaExceeded) as refused:
            uploads.add(slot("big", size=101), daily_quota=100)
        assert (refused.value.kind, refused.value.retry) == ("daily", None)

    def test_quota_applies_before_daily_quota(self, uploads):
        uploads.add(slot("s1", size=90))
        with pytest.raises(QuotaExceeded) as refused:
            uploads.add(slot("s2", size=20), quota=100, daily_quota=100)
        assert refused.value.kind == "quota"


class TestSweep:
    def test_expired_by_domain_age_and_pending(self, store, uploads):
        store.open("accounts").create("carol", "example.net", KEYS)
        uploads.add(slot("old", created=T0 - timedelta(days=31)))
        uploads.mark_stored("old")
        uploads.add(slot("fresh", created=T0 - timedelta(days=1)))
        uploads.mark_stored("fresh")
        uploads.add(slot("abandoned", created=T0 - timedelta(hours=2)))  # never uploaded
        uploads.add(slot("pending", created=T0 - timedelta(seconds=10)))
        uploads.add(slot("other", created=T0 - timedelta(days=40), owner=("carol", "example.net")))
        found = uploads.expired("example.org", T0 - timedelta(days=30), T0 - timedelta(hours=1),
                                limit=10)
        assert found == ["old", "abandoned"]
        assert uploads.expired("example.org", T0 - timedelta(days=30),
                               T0 - timedelta(hours=1), limit=1) == ["old"]
        assert uploads.expired("example.net", T0, T0, limit=10) == ["other"]

    def test_existing_and_delete(self, uploads):
        for id_ in ("a", "b", "c"):
            uploads.add(slot(id_))
        assert uploads.existing(["a", "c", "zz"]) == {"a", "c"}
        assert uploads.existing([]) == set()
        assert uploads.delete(["a", "zz"]) == 1
        assert uploads.delete([]) == 0
        assert [u.id for u in uploads.uploads(*ALICE)] == ["b", "c"]
