"""
The store contract: one suite, written once, run against every
:class:`~halp.interfaces.IHostStore` implementation.

A new backend adds a ``TestCase`` that mixes in :class:`StoreContractMixin`
and implements :meth:`StoreContractMixin.make_store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from halp.interfaces import IHostStore
from halp.model import Census, Change, Entry, LabelCount, LabelInfo, Merged
from halp.store import insert_entries
from halp.store.memory import MemoryStore
from halp.store.sqlite import SQLiteStore

# inlineCallbacks generators yield Deferreds and return None.
Gen = Generator[Deferred[Any], Any, None]

E1 = Entry(1000, "192.0.2.1", 1)
E2 = Entry(2000, "192.0.2.2", 2)
E3 = Entry(3000, "192.0.2.3", 3)
BIG = 10**9


if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class StoreContractMixin(_Base):
    """What every store must do.  Mix into a trial ``TestCase``."""

    store: IHostStore

    def make_store(self) -> IHostStore:
        raise NotImplementedError

    def reopen_store(self, store: IHostStore) -> IHostStore:
        """
        Another store on the data of ``store``, as after a restart (or, for
        a shared store, in another process).  The caller closes ``store``
        first.  A store that keeps nothing across a restart skips the test.
        """
        raise SkipTest(f"the {store.name} store keeps nothing across a restart")

    def setUp(self) -> None:
        self.store = self.make_store()
        self.addCleanup(self.store.close)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IHostStore, self.store))

    @inlineCallbacks
    def test_empty(self) -> Gen:
        self.assertEqual((yield self.store.get("nothing", 0, 10, 0)), [])
        self.assertEqual((yield self.store.list_labels("", 0, 10, 0)), [])
        self.assertEqual((yield self.store.purge(BIG)), 0)

    @inlineCallbacks
    def test_insert_and_get_newest_first(self) -> Gen:
        stored = yield insert_entries(self.store, ["a"], [E2, E1, E3], 100)
        self.assertEqual(stored, [[2000, 1000, 3000]])
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [E3, E2, E1])

    @inlineCallbacks
    def test_ties_order_by_host_then_port(self) -> Gen:
        entries = [
            Entry(5, "b.example", 2),
            Entry(5, "a.example", 9),
            Entry(5, "b.example", 1),
            Entry(6, "z.example", 1),
        ]
        yield insert_entries(self.store, ["a"], entries, 100)
        self.assertEqual(
            (yield self.store.get("a", 0, 10, 0)),
            [
                Entry(6, "z.example", 1),
                Entry(5, "a.example", 9),
                Entry(5, "b.example", 1),
                Entry(5, "b.example", 2),
            ],
        )

    @inlineCallbacks
    def test_slices(self) -> Gen:
        entries = [Entry(100 + i, "192.0.2.%d" % i, 1) for i in range(20)]
        yield insert_entries(self.store, ["a"], entries, 100)
        newest_first = sorted(entries, key=lambda e: -e.timestamp)
        self.assertEqual((yield self.store.get("a", 0, 5, 0)), newest_first[0:5])
        self.assertEqual((yield self.store.get("a", 5, 12, 0)), newest_first[5:12])
        self.assertEqual((yield self.store.get("a", 18, 40, 0)), newest_first[18:])
        self.assertEqual((yield self.store.get("a", 25, 30, 0)), [])
        self.assertEqual((yield self.store.get("a", 3, 3, 0)), [])

    @inlineCallbacks
    def test_confirmed_time_only_moves_forward(self) -> Gen:
        yield insert_entries(self.store, ["a"], [Entry(2000, "h.example", 1)], 100)
        stored = yield insert_entries(self.store, ["a"], [Entry(1500, "h.example", 1)], 100)
        self.assertEqual(stored, [[2000]])
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [Entry(2000, "h.example", 1)])
        stored = yield insert_entries(self.store, ["a"], [Entry(2500, "h.example", 1)], 100)
        self.assertEqual(stored, [[2500]])
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [Entry(2500, "h.example", 1)])

    @inlineCallbacks
    def test_same_address_in_one_insert(self) -> Gen:
        stored = yield insert_entries(self.store, 
            ["a"], [Entry(10, "h.example", 1), Entry(30, "h.example", 1), Entry(20, "h.example", 1)], 100
        )
        self.assertEqual(stored, [[10, 30, 30]])
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [Entry(30, "h.example", 1)])

    @inlineCallbacks
    def test_entry_is_host_and_port(self) -> Gen:
        yield insert_entries(self.store, ["a"], [Entry(10, "h.example", 1), Entry(20, "h.example", 2)], 100)
        self.assertEqual(len((yield self.store.get("a", 0, 10, 0))), 2)

    @inlineCallbacks
    def test_labels_are_separate(self) -> Gen:
        yield insert_entries(self.store, ["a", "b"], [E1], 100)
        yield insert_entries(self.store, ["b"], [E2], 100)
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [E1])
        self.assertEqual((yield self.store.get("b", 0, 10, 0)), [E2, E1])
        self.assertEqual((yield self.store.get("A", 0, 10, 0)), [])

    @inlineCallbacks
    def test_cap_evicts_oldest(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1, E2], 3)
        stored = yield insert_entries(self.store, ["a"], [E3, Entry(2500, "192.0.2.4", 4)], 3)
        self.assertEqual(stored, [[3000, 2500]])
        self.assertEqual(
            (yield self.store.get("a", 0, 10, 0)), [E3, Entry(2500, "192.0.2.4", 4), E2]
        )

    @inlineCallbacks
    def test_cap_reports_entries_evicted_at_once(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E2, E3], 2)
        stored = yield insert_entries(self.store, ["a"], [E1], 2)
        self.assertEqual(stored, [[None]])
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [E3, E2])

    @inlineCallbacks
    def test_cap_applies_per_label(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1, E2], 10)
        stored = yield insert_entries(self.store, ["a", "b"], [E3], 2)
        self.assertEqual(stored, [[3000], [3000]])
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [E3, E2])
        self.assertEqual((yield self.store.get("b", 0, 10, 0)), [E3])

    @inlineCallbacks
    def test_cap_never_exceeded_by_big_insert(self) -> Gen:
        entries = [Entry(i, "192.0.2.%d" % i, 1) for i in range(1, 51)]
        stored = yield insert_entries(self.store, ["a"], entries, 7)
        self.assertEqual(stored[0][:43], [None] * 43)
        self.assertEqual(stored[0][43:], list(range(44, 51)))
        got = yield self.store.get("a", 0, 100, 0)
        self.assertEqual([e.timestamp for e in got], list(range(50, 43, -1)))

    @inlineCallbacks
    def test_get_leaves_out_expired(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1, E2, E3], 100)
        self.assertEqual((yield self.store.get("a", 0, 10, 2000)), [E3, E2])
        self.assertEqual((yield self.store.get("a", 0, 10, 2001)), [E3])
        self.assertEqual((yield self.store.get("a", 0, 10, 3001)), [])

    @inlineCallbacks
    def test_label_index(self) -> Gen:
        yield insert_entries(self.store, ["app/v1", "app/v2/x"], [E1], 100)
        yield insert_entries(self.store, ["bittorrent"], [E2], 100)
        yield insert_entries(self.store, ["app/v2/y"], [E3], 100)
        self.assertEqual(
            (yield self.store.list_labels("", 0, 10, 0)),
            [LabelInfo(3000, "app"), LabelInfo(2000, "bittorrent")],
        )
        self.assertEqual(
            (yield self.store.list_labels("app", 0, 10, 0)),
            [LabelInfo(3000, "app/v2"), LabelInfo(1000, "app/v1")],
        )
        self.assertEqual(
            (yield self.store.list_labels("app/v2", 0, 10, 0)),
            [LabelInfo(3000, "app/v2/y"), LabelInfo(1000, "app/v2/x")],
        )
        self.assertEqual((yield self.store.list_labels("app/v1", 0, 10, 0)), [])
        self.assertEqual((yield self.store.list_labels("", 1, 10, 0)), [LabelInfo(2000, "bittorrent")])
        self.assertEqual((yield self.store.list_labels("", 0, 10, 2500)), [LabelInfo(3000, "app")])

    @inlineCallbacks
    def test_label_index_ties_by_name(self) -> Gen:
        yield insert_entries(self.store, ["b", "a", "c"], [E1], 100)
        self.assertEqual(
            [i.name for i in (yield self.store.list_labels("", 0, 10, 0))], ["a", "b", "c"]
        )

    @inlineCallbacks
    def test_label_index_time_only_moves_forward(self) -> Gen:
        yield insert_entries(self.store, ["a/b"], [E3], 100)
        yield insert_entries(self.store, ["a/c"], [E1], 100)
        self.assertEqual((yield self.store.list_labels("", 0, 10, 0)), [LabelInfo(3000, "a")])

    @inlineCallbacks
    def test_label_index_uses_stored_time(self) -> Gen:
        """An old confirmation of a newer entry is activity at the newer time."""
        yield insert_entries(self.store, ["a"], [E3], 100)
        yield insert_entries(self.store, ["b"], [E1], 100)
        yield insert_entries(self.store, ["b"], [Entry(500, E1.host, E1.port)], 100)
        self.assertEqual(
            (yield self.store.list_labels("", 0, 10, 0)),
            [LabelInfo(3000, "a"), LabelInfo(1000, "b")],
        )

    @inlineCallbacks
    def test_no_index_row_for_nothing_kept(self) -> Gen:
        stored = yield insert_entries(self.store, ["a"], [], 100)
        self.assertEqual(stored, [[]])
        self.assertEqual((yield self.store.list_labels("", 0, 10, 0)), [])

    @inlineCallbacks
    def test_census_of_an_empty_store(self) -> Gen:
        self.assertEqual((yield self.store.census(0, 10)), Census(0, 0, []))

    @inlineCallbacks
    def test_census_counts_labels_that_hold_entries(self) -> Gen:
        yield insert_entries(self.store, ["app/v1", "app/v2/x"], [E1, E2], 100)
        yield insert_entries(self.store, ["bittorrent"], [E3], 100)
        census = yield self.store.census(0, 10)
        # "app" and "app/v2" are index rows without entries of their own.
        self.assertEqual(
            census,
            Census(
                3,
                5,
                [
                    LabelCount("bittorrent", 1, 3000),
                    LabelCount("app/v1", 2, 2000),
                    LabelCount("app/v2/x", 2, 2000),
                ],
            ),
        )

    @inlineCallbacks
    def test_census_limits_the_list_not_the_totals(self) -> Gen:
        yield insert_entries(self.store, ["a", "b", "c"], [E1], 100)
        census = yield self.store.census(0, 2)
        self.assertEqual((census.labels, census.entries), (3, 3))
        self.assertEqual([c.name for c in census.busiest], ["a", "b"])
        self.assertEqual((yield self.store.census(0, 0)).busiest, [])

    @inlineCallbacks
    def test_census_leaves_out_labels_with_only_expired_entries(self) -> Gen:
        yield insert_entries(self.store, ["old"], [E1], 100)
        yield insert_entries(self.store, ["new"], [E1, E3], 100)
        census = yield self.store.census(2000, 10)
        # "new" still holds its expired entry until the next purge.
        self.assertEqual(census, Census(1, 2, [LabelCount("new", 2, 3000)]))

    @inlineCallbacks
    def test_census_follows_evictions_removals_and_purges(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1, E2, E3], 2)
        yield insert_entries(self.store, ["b"], [E1, E2], 100)
        self.assertEqual((yield self.store.census(0, 10)).entries, 4)
        yield self.store.remove("b", [E1.address])
        self.assertEqual((yield self.store.census(0, 10)).entries, 3)
        yield self.store.remove("b", [E2.address])
        self.assertEqual(
            (yield self.store.census(0, 10)), Census(1, 2, [LabelCount("a", 2, 3000)])
        )
        yield self.store.purge(2500)
        self.assertEqual(
            (yield self.store.census(0, 10)), Census(1, 1, [LabelCount("a", 1, 3000)])
        )

    @inlineCallbacks
    def test_purge(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1, E2], 100)
        yield insert_entries(self.store, ["b/c"], [E1], 100)
        yield insert_entries(self.store, ["d"], [E3], 100)
        self.assertEqual((yield self.store.purge(2000)), 2)
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [E2])
        self.assertEqual((yield self.store.get("b/c", 0, 10, 0)), [])
        self.assertEqual(
            (yield self.store.list_labels("", 0, 10, 0)),
            [LabelInfo(3000, "d"), LabelInfo(2000, "a")],
        )
        self.assertEqual((yield self.store.list_labels("b", 0, 10, 0)), [])

    @inlineCallbacks
    def test_purge_keeps_cap_accounting(self) -> Gen:
        """After a purge, a full label has room again for exactly as many."""
        yield insert_entries(self.store, ["a"], [E1, E2, E3], 3)
        yield self.store.purge(2500)
        stored = yield insert_entries(self.store, 
            ["a"], [Entry(4000, "192.0.2.4", 4), Entry(5000, "192.0.2.5", 5)], 3
        )
        self.assertEqual(stored, [[4000, 5000]])
        got = yield self.store.get("a", 0, 10, 0)
        self.assertEqual([e.timestamp for e in got], [5000, 4000, 3000])
        stored = yield insert_entries(self.store, ["a"], [Entry(6000, "192.0.2.6", 6)], 3)
        got = yield self.store.get("a", 0, 10, 0)
        self.assertEqual([e.timestamp for e in got], [6000, 5000, 4000])

    @inlineCallbacks
    def test_lowered_cap_trims_on_next_insert(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1, E2, E3], 10)
        yield insert_entries(self.store, ["a"], [Entry(4000, "192.0.2.4", 4)], 2)
        got = yield self.store.get("a", 0, 10, 0)
        self.assertEqual([e.timestamp for e in got], [4000, 3000])

    @inlineCallbacks
    def test_remove_deletes_only_the_named_addresses(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1, E2, E3], 100)
        removed = yield self.store.remove("a", [E1.address, E3.address])
        self.assertEqual(removed, 2)
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [E2])

    @inlineCallbacks
    def test_remove_matches_host_and_port(self) -> Gen:
        yield insert_entries(self.store, ["a"], [Entry(10, "h.example", 1), Entry(20, "h.example", 2)], 100)
        self.assertEqual((yield self.store.remove("a", [("h.example", 2)])), 1)
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [Entry(10, "h.example", 1)])

    @inlineCallbacks
    def test_remove_unknown_addresses_and_labels(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1], 100)
        self.assertEqual((yield self.store.remove("a", [E2.address, ("h.example", 1)])), 0)
        self.assertEqual((yield self.store.remove("a", [])), 0)
        self.assertEqual((yield self.store.remove("nothing", [E1.address])), 0)
        self.assertEqual((yield self.store.remove("A", [E1.address])), 0)
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [E1])

    @inlineCallbacks
    def test_remove_counts_an_address_given_twice_once(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1, E2], 100)
        self.assertEqual((yield self.store.remove("a", [E1.address, E1.address])), 1)
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [E2])

    @inlineCallbacks
    def test_remove_leaves_other_labels_alone(self) -> Gen:
        yield insert_entries(self.store, ["a", "b", "a/x"], [E1, E2], 100)
        self.assertEqual((yield self.store.remove("a", [E1.address])), 1)
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [E2])
        self.assertEqual((yield self.store.get("b", 0, 10, 0)), [E2, E1])
        self.assertEqual((yield self.store.get("a/x", 0, 10, 0)), [E2, E1])

    @inlineCallbacks
    def test_remove_keeps_cap_accounting(self) -> Gen:
        """After a remove, a full label has room again for exactly as many."""
        yield insert_entries(self.store, ["a"], [E1, E2, E3], 3)
        self.assertEqual((yield self.store.remove("a", [E2.address])), 1)
        stored = yield insert_entries(self.store, ["a"], [Entry(4000, "192.0.2.4", 4)], 3)
        self.assertEqual(stored, [[4000]])
        got = yield self.store.get("a", 0, 10, 0)
        self.assertEqual([e.timestamp for e in got], [4000, 3000, 1000])
        stored = yield insert_entries(self.store, ["a"], [Entry(5000, "192.0.2.5", 5)], 3)
        self.assertEqual(stored, [[5000]])
        got = yield self.store.get("a", 0, 10, 0)
        self.assertEqual([e.timestamp for e in got], [5000, 4000, 3000])

    @inlineCallbacks
    def test_remove_everything_then_fill_to_the_cap(self) -> Gen:
        yield insert_entries(self.store, ["a"], [E1, E2], 2)
        self.assertEqual((yield self.store.remove("a", [E1.address, E2.address])), 2)
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [])
        entries = [Entry(10, "h.example", 1), Entry(20, "h.example", 2)]
        self.assertEqual((yield insert_entries(self.store, ["a"], entries, 2)), [[10, 20]])
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), entries[::-1])

    @inlineCallbacks
    def test_removed_entries_are_really_gone(self) -> Gen:
        """A removed entry comes back with any time, even an older one."""
        yield insert_entries(self.store, ["a"], [E3], 100)
        yield self.store.remove("a", [E3.address])
        older = Entry(500, E3.host, E3.port)
        self.assertEqual((yield insert_entries(self.store, ["a"], [older], 100)), [[500]])
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [older])

    @inlineCallbacks
    def test_remove_keeps_label_index(self) -> Gen:
        yield insert_entries(self.store, ["app/v1"], [E1, E2], 100)
        self.assertEqual((yield self.store.remove("app/v1", [E1.address, E2.address])), 2)
        self.assertEqual((yield self.store.get("app/v1", 0, 10, 0)), [])
        self.assertEqual((yield self.store.list_labels("", 0, 10, 0)), [LabelInfo(2000, "app")])
        self.assertEqual(
            (yield self.store.list_labels("app", 0, 10, 0)), [LabelInfo(2000, "app/v1")]
        )
        # A later insert moves the kept row forward only.
        yield insert_entries(self.store, ["app/v1"], [Entry(1500, "h.example", 1)], 100)
        self.assertEqual(
            (yield self.store.list_labels("app", 0, 10, 0)), [LabelInfo(2000, "app/v1")]
        )
        # The purge still removes the rows when their time has passed.
        yield self.store.purge(BIG)
        self.assertEqual((yield self.store.list_labels("", 0, 10, 0)), [])

    @inlineCallbacks
    def test_state_missing_key(self) -> Gen:
        self.assertIsNone((yield self.store.get_state("client/servers")))

    @inlineCallbacks
    def test_state_put_then_get(self) -> Gen:
        yield self.store.put_state("client/servers", '{"a": 1}')
        self.assertEqual((yield self.store.get_state("client/servers")), '{"a": 1}')

    @inlineCallbacks
    def test_state_overwrite(self) -> Gen:
        yield self.store.put_state("k", "one")
        yield self.store.put_state("k", "two")
        self.assertEqual((yield self.store.get_state("k")), "two")

    @inlineCallbacks
    def test_state_put_none_deletes(self) -> Gen:
        yield self.store.put_state("k", "one")
        yield self.store.put_state("k", None)
        self.assertIsNone((yield self.store.get_state("k")))
        yield self.store.put_state("k", None)
        self.assertIsNone((yield self.store.get_state("k")))
        yield self.store.put_state("k", "again")
        self.assertEqual((yield self.store.get_state("k")), "again")

    @inlineCallbacks
    def test_state_empty_text_is_not_none(self) -> Gen:
        yield self.store.put_state("k", "")
        self.assertEqual((yield self.store.get_state("k")), "")

    @inlineCallbacks
    def test_state_keys_are_independent(self) -> Gen:
        yield self.store.put_state("client/servers", "s")
        yield self.store.put_state("server/peers", "p")
        yield self.store.put_state("Client/servers", "S")
        yield self.store.put_state("server/peers", None)
        self.assertEqual((yield self.store.get_state("client/servers")), "s")
        self.assertEqual((yield self.store.get_state("Client/servers")), "S")
        self.assertIsNone((yield self.store.get_state("server/peers")))

    @inlineCallbacks
    def test_state_is_not_entries(self) -> Gen:
        """State neither expires nor shows up among labels and entries."""
        yield self.store.put_state("k", "v")
        yield insert_entries(self.store, ["k"], [E1], 100)
        self.assertEqual((yield self.store.purge(BIG)), 1)
        self.assertEqual((yield self.store.get_state("k")), "v")
        self.assertEqual((yield self.store.list_labels("", 0, 10, 0)), [])
        self.assertEqual((yield self.store.get("k", 0, 10, 0)), [])

    @inlineCallbacks
    def test_state_keeps_non_ascii_text(self) -> Gen:
        value = '{"name": "h\u00e9te", "raw": "héte ☃"}'
        yield self.store.put_state("k", value)
        self.assertEqual((yield self.store.get_state("k")), value)

    @inlineCallbacks
    def test_close_waits_for_pending_writes(self) -> Gen:
        pending = insert_entries(self.store, ["a"], [E1], 10)
        yield self.store.close()
        self.assertEqual((yield pending), [[1000]])

    # -- merge: what changed, and provenance ----------------------------------

    @inlineCallbacks
    def test_merge_says_what_changed(self) -> Gen:
        merged = yield self.store.merge([C("a", E1), C("a", E2)], 10)
        self.assertEqual(merged, [Merged(1000, True), Merged(2000, True)])
        merged = yield self.store.merge(
            [C("a", E1), C("a", Entry(1500, *E2.address)), C("a", Entry(1001, *E1.address))],
            10,
        )
        # Same time: unchanged; older: unchanged, with the stored time; newer: changed.
        self.assertEqual(
            merged, [Merged(1000, False), Merged(2000, False), Merged(1001, True)]
        )

    @inlineCallbacks
    def test_merge_of_several_labels(self) -> Gen:
        merged = yield self.store.merge([C("a", E1), C("b", E1), C("a/x", E2)], 10)
        self.assertEqual([m.changed for m in merged], [True, True, True])
        self.assertEqual((yield self.store.get("b", 0, 10, 0)), [E1])
        self.assertEqual((yield self.store.get("a/x", 0, 10, 0)), [E2])
        self.assertEqual(
            (yield self.store.list_labels("", 0, 10, 0)),
            [LabelInfo(2000, "a"), LabelInfo(1000, "b")],
        )

    @inlineCallbacks
    def test_merge_evicted_at_once_is_not_a_change(self) -> Gen:
        yield self.store.merge([C("a", E2), C("a", E3)], 2)
        merged = yield self.store.merge([C("a", E1)], 2)
        self.assertEqual(merged, [Merged(None, False)])
        page = yield self.store.changes("", 10, 0)
        self.assertEqual([c.entry for c in page.changes], [E2, E3])

    @inlineCallbacks
    def test_provenance_follows_the_latest_confirmation(self) -> Gen:
        yield self.store.merge([C("a", E1, "198.51.100.1", "")], 10)
        yield self.store.merge([C("a", E1, "198.51.100.2", "192.0.2.9:7100")], 10)
        page = yield self.store.changes("", 10, 0)
        # Not newer: the first provenance stands.
        self.assertEqual(page.changes, [C("a", E1, "198.51.100.1", "")])
        newer = Entry(1001, *E1.address)
        yield self.store.merge([C("a", newer, "198.51.100.2", "192.0.2.9:7100")], 10)
        page = yield self.store.changes("", 10, 0)
        self.assertEqual(page.changes, [C("a", newer, "198.51.100.2", "192.0.2.9:7100")])

    # -- the change feed ------------------------------------------------------

    @inlineCallbacks
    def test_empty_feed(self) -> Gen:
        page = yield self.store.changes("", 10, 0)
        self.assertEqual((page.changes, page.more), ([], False))
        again = yield self.store.changes(page.cursor, 10, 0)
        self.assertEqual((again.changes, again.more), ([], False))

    @inlineCallbacks
    def test_feed_is_in_change_order_and_continues_from_its_cursor(self) -> Gen:
        yield self.store.merge([C("a", E3), C("b", E1)], 10)
        yield self.store.merge([C("a", E2)], 10)
        page = yield self.store.changes("", 10, 0)
        self.assertEqual(page.changes, [C("a", E3), C("b", E1), C("a", E2)])
        self.assertFalse(page.more)
        nothing = yield self.store.changes(page.cursor, 10, 0)
        self.assertEqual(nothing.changes, [])
        self.assertEqual(nothing.cursor, page.cursor)
        yield self.store.merge([C("c", E1)], 10)
        later = yield self.store.changes(page.cursor, 10, 0)
        self.assertEqual(later.changes, [C("c", E1)])

    @inlineCallbacks
    def test_feed_pages(self) -> Gen:
        entries = [Entry(1000 + i, "192.0.2.1", i + 1) for i in range(7)]
        yield self.store.merge([C("a", e) for e in entries], 100)
        seen: list[Entry] = []
        cursor = ""
        pages = 0
        while True:
            page = yield self.store.changes(cursor, 3, 0)
            pages += 1
            seen.extend(c.entry for c in page.changes)
            cursor = page.cursor
            if not page.more:
                break
        self.assertEqual(seen, entries)
        self.assertEqual(pages, 3)

    @inlineCallbacks
    def test_a_full_last_page_says_whether_more_exist(self) -> Gen:
        yield self.store.merge([C("a", E1), C("a", E2)], 10)
        page = yield self.store.changes("", 2, 0)
        self.assertEqual((len(page.changes), page.more), (2, False))
        page = yield self.store.changes("", 1, 0)
        self.assertEqual((len(page.changes), page.more), (1, True))

    @inlineCallbacks
    def test_a_changed_entry_moves_to_the_end_of_the_feed(self) -> Gen:
        yield self.store.merge([C("a", E1), C("a", E2)], 10)
        first = yield self.store.changes("", 10, 0)
        newer = Entry(5000, *E1.address)
        yield self.store.merge([C("a", newer, "198.51.100.3")], 10)
        page = yield self.store.changes("", 10, 0)
        self.assertEqual(page.changes, [C("a", E2), C("a", newer, "198.51.100.3")])
        later = yield self.store.changes(first.cursor, 10, 0)
        self.assertEqual(later.changes, [C("a", newer, "198.51.100.3")])

    @inlineCallbacks
    def test_unchanged_merges_do_not_move_entries(self) -> Gen:
        yield self.store.merge([C("a", E1)], 10)
        first = yield self.store.changes("", 10, 0)
        yield self.store.merge([C("a", E1), C("a", Entry(10, *E1.address))], 10)
        later = yield self.store.changes(first.cursor, 10, 0)
        self.assertEqual(later.changes, [])

    @inlineCallbacks
    def test_feed_leaves_out_expired_entries_and_skips_past_them(self) -> Gen:
        yield self.store.merge([C("a", E3), C("a", E1), C("a", E2)], 10)
        page = yield self.store.changes("", 10, 1500)
        self.assertEqual(page.changes, [C("a", E3), C("a", E2)])
        page = yield self.store.changes("", 2, 1500)
        self.assertEqual((page.changes, page.more), ([C("a", E3), C("a", E2)], False))
        page = yield self.store.changes("", 1, 1500)
        self.assertEqual((page.changes, page.more), ([C("a", E3)], True))
        rest = yield self.store.changes(page.cursor, 1, 1500)
        self.assertEqual((rest.changes, rest.more), ([C("a", E2)], False))

    @inlineCallbacks
    def test_evicted_removed_and_purged_entries_leave_the_feed(self) -> Gen:
        yield self.store.merge([C("a", E1), C("a", E2), C("b", E3), C("c", E1)], 10)
        yield self.store.merge([C("a", E3)], 2)  # evicts E1 from a
        yield self.store.remove("b", [E3.address])
        yield self.store.purge(1500)  # E1 from c
        page = yield self.store.changes("", 10, 0)
        self.assertEqual(page.changes, [C("a", E2), C("a", E3)])

    @inlineCallbacks
    def test_foreign_and_malformed_cursors_start_from_the_beginning(self) -> Gen:
        yield self.store.merge([C("a", E1)], 10)
        for cursor in ("", "0", "junk", "abcdef:1", "0123456789abcdef:99999", ":"):
            page = yield self.store.changes(cursor, 10, 0)
            self.assertEqual(page.changes, [C("a", E1)], cursor)

    @inlineCallbacks
    def test_cursors_do_not_travel_between_stores(self) -> Gen:
        yield self.store.merge([C("a", E1), C("a", E2)], 10)
        other = self.make_store()
        self.addCleanup(other.close)
        yield other.merge([C("a", E1), C("a", E2), C("a", E3)], 10)
        theirs = yield other.changes("", 2, 0)
        # A cursor of another store means nothing here, even at the same position.
        page = yield self.store.changes(theirs.cursor, 10, 0)
        self.assertEqual(page.changes, [C("a", E1), C("a", E2)])

    @inlineCallbacks
    def test_feed_survives_the_numbers_of_evicted_changes(self) -> Gen:
        """A change number is never given twice, even after the newest entry left."""
        yield self.store.merge([C("a", E1), C("a", E2)], 10)
        page = yield self.store.changes("", 10, 0)
        yield self.store.remove("a", [E2.address])
        yield self.store.merge([C("a", E3)], 10)
        later = yield self.store.changes(page.cursor, 10, 0)
        self.assertEqual(later.changes, [C("a", E3)])

    @inlineCallbacks
    def test_feed_after_many_replacements_and_removals(self) -> Gen:
        """
        Thousands of entries confirmed again and removed (the memory store
        compacts its feed on the way): from a cursor taken midway and from
        the start, the feed has each remaining entry once, at its newest
        time, in change order.
        """
        hosts = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(3000)]
        yield self.store.merge([C("a", Entry(1000, h, 7)) for h in hosts], 10_000)
        yield self.store.merge([C("b", Entry(1000, h, 8)) for h in hosts[:100]], 10_000)
        middle = yield self.store.changes("", 10_000, 0)
        yield self.store.merge([C("a", Entry(2000, h, 7)) for h in hosts[:2500]], 10_000)
        yield self.store.remove("a", [(h, 7) for h in hosts[2500:2700]])
        yield self.store.merge([C("a", Entry(3000, h, 7)) for h in hosts[1000:1500]], 10_000)
        expected = (
            [C("b", Entry(1000, h, 8)) for h in hosts[:100]]
            + [C("a", Entry(2000, h, 7)) for h in hosts[:1000] + hosts[1500:2500]]
            + [C("a", Entry(3000, h, 7)) for h in hosts[1000:1500]]
        )
        later = yield self.store.changes(middle.cursor, 10_000, 0)
        self.assertEqual(later.changes, expected[100:])
        seen: list[Change] = []
        cursor = ""
        while True:
            page = yield self.store.changes(cursor, 700, 0)
            seen.extend(page.changes)
            cursor = page.cursor
            if not page.more:
                break
        self.assertEqual(seen, [C("a", Entry(1000, h, 7)) for h in hosts[2700:]] + expected)
        got = yield self.store.get("a", 0, 3, 0)
        self.assertEqual(got, [Entry(3000, h, 7) for h in sorted(hosts[1000:1500])[:3]])

    # -- merge: the per-group quota -------------------------------------------

    @inlineCallbacks
    def test_group_quota_keeps_each_group_to_its_share(self) -> Gen:
        merged = yield self.store.merge(
            [
                # v4:1.2: the third evicts the first.
                C("a", H(10, 1), A1), C("a", H(20, 2), A2), C("a", H(30, 3), A3),
                # v4:8.8: the newcomer is the group's oldest, and goes itself.
                C("a", H(15, 4), B1), C("a", H(25, 5), B2), C("a", H(5, 6), B1),
                # Source "": exempt.
                C("a", H(1, 7)), C("a", H(2, 8)), C("a", H(3, 9)),
            ],
            100,
            2,
        )
        self.assertEqual(
            merged,
            [
                Merged(None, False), Merged(20, True), Merged(30, True),
                Merged(15, True), Merged(25, True), Merged(None, False),
                Merged(1, True), Merged(2, True), Merged(3, True),
            ],
        )
        self.assertEqual(ports((yield self.store.get("a", 0, 100, 0))), [3, 5, 2, 4, 9, 8, 7])
        self.assertEqual((yield self.store.census(0, 10)).entries, 7)
        page = yield self.store.changes("", 100, 0)
        self.assertEqual([c.entry.port for c in page.changes], [2, 3, 4, 5, 7, 8, 9])
        # Another of v4:1.2 evicts that group's oldest, and nothing else.
        merged = yield self.store.merge([C("a", H(40, 10), A1)], 100, 2)
        self.assertEqual(merged, [Merged(40, True)])
        self.assertEqual(ports((yield self.store.get("a", 0, 100, 0))), [10, 3, 5, 4, 9, 8, 7])

    @inlineCallbacks
    def test_group_quota_never_evicts_another_group(self) -> Gen:
        yield self.store.merge([C("a", H(1, 1), B1), C("a", H(2, 2), B2), C("a", H(0, 3))], 100)
        merged = yield self.store.merge(
            [C("a", H(10 + i, 10 + i), A1) for i in range(5)], 100, 1
        )
        self.assertEqual(merged, [Merged(None, False)] * 4 + [Merged(14, True)])
        self.assertEqual(ports((yield self.store.get("a", 0, 100, 0))), [14, 2, 1, 3])
        first = yield self.store.changes("", 100, 0)
        # An older newcomer of a full group is evicted at once: no change,
        # although every entry of the other groups is older still.
        merged = yield self.store.merge([C("a", H(5, 20), A2)], 100, 1)
        self.assertEqual(merged, [Merged(None, False)])
        self.assertEqual(ports((yield self.store.get("a", 0, 100, 0))), [14, 2, 1, 3])
        self.assertEqual((yield self.store.changes(first.cursor, 100, 0)).changes, [])

    @inlineCallbacks
    def test_one_group_cannot_flush_the_others(self) -> Gen:
        """
        One /16 inserting 10,000 entries into a label of 1,000 keeps 15 of
        them (1/64 of the cap), and every honest entry of the other groups
        stays, although all are older than the flood (without the quota, the
        cap would keep only the flood's newest 1,000).
        """
        cap, quota = 1000, 1000 // 64
        flood, honest_groups, per_group = 10_000, 40, 10
        self.assertEqual(quota, 15)
        honest = [
            C("a", Entry(1000 + g * per_group + k, f"10.{g}.{k}.1", 7100), f"{20 + g}.7.0.1")
            for g in range(honest_groups)
            for k in range(per_group)
        ]
        yield self.store.merge(honest, cap, quota)
        attack = [
            C("a", Entry(5000 + i, f"172.16.{i // 250}.{i % 250}", 7100), f"66.66.{i % 250}.{i // 250}")
            for i in range(flood)
        ]
        for start in range(0, flood, 500):
            yield self.store.merge(attack[start : start + 500], cap, quota)
        got = yield self.store.get("a", 0, 2 * cap, 0)
        self.assertEqual(len(got), honest_groups * per_group + quota)
        self.assertEqual(got[:quota], [c.entry for c in reversed(attack[-quota:])])
        self.assertEqual(sorted(got[quota:], key=lambda e: e.timestamp), [c.entry for c in honest])

    @inlineCallbacks
    def test_ipv6_sources_are_grouped_by_their_32(self) -> Gen:
        merged = yield self.store.merge(
            [
                C("a", H(10, 1), "2a00:1450:4001::1"),
                C("a", H(20, 2), "2a00:1451::1"),
                C("a", H(30, 3), "2a00:1450:ffff::2"),
                # An IPv4-mapped address is its IPv4 address.
                C("a", H(40, 4), A1),
                C("a", H(50, 5), "::ffff:" + A2),
            ],
            100,
            1,
        )
        self.assertEqual(
            [m.stored for m in merged], [None, 20, 30, None, 50]
        )
        self.assertEqual(ports((yield self.store.get("a", 0, 100, 0))), [5, 3, 2])

    @inlineCallbacks
    def test_non_global_sources_are_each_their_own_group(self) -> Gen:
        merged = yield self.store.merge(
            [
                C("a", H(10, 1), "10.0.0.1"),
                C("a", H(20, 2), "10.0.0.2"),
                C("a", H(30, 3), "192.168.1.1"),
                C("a", H(40, 4), "fe80::1"),
                C("a", H(50, 5), "10.0.0.1"),
            ],
            100,
            1,
        )
        self.assertEqual([m.stored for m in merged], [None, 20, 30, 40, 50])
        self.assertEqual(ports((yield self.store.get("a", 0, 100, 0))), [5, 4, 3, 2])

    @inlineCallbacks
    def test_source_empty_is_exempt_from_the_quota(self) -> Gen:
        merged = yield self.store.merge([C("a", H(i, i)) for i in range(1, 6)], 100, 1)
        self.assertEqual([m.stored for m in merged], [1, 2, 3, 4, 5])
        # Nor do its entries count towards any group.
        merged = yield self.store.merge([C("a", H(6, 6), A1), C("a", H(7, 7), A2)], 100, 1)
        self.assertEqual([m.stored for m in merged], [None, 7])
        self.assertEqual(ports((yield self.store.get("a", 0, 100, 0))), [7, 5, 4, 3, 2, 1])

    @inlineCallbacks
    def test_group_quota_ties_evict_the_last_in_label_order(self) -> Gen:
        yield self.store.merge([C("a", Entry(10, "h.example", 1), A1)], 100, 1)
        # Same time: h.example 2 sorts after h.example 1, so it goes.
        merged = yield self.store.merge([C("a", Entry(10, "h.example", 2), A2)], 100, 1)
        self.assertEqual(merged, [Merged(None, False)])
        # a.example sorts before h.example: h.example 1 goes.
        merged = yield self.store.merge([C("a", Entry(10, "a.example", 9), A3)], 100, 1)
        self.assertEqual(merged, [Merged(10, True)])
        self.assertEqual((yield self.store.get("a", 0, 10, 0)), [Entry(10, "a.example", 9)])

    @inlineCallbacks
    def test_group_quota_then_the_cap(self) -> Gen:
        yield self.store.merge([C("a", H(5, 1), B1)], 3)
        merged = yield self.store.merge(
            [C("a", H(10, 2), A1), C("a", H(20, 3), A2), C("a", H(30, 4), A3), C("a", H(1, 5), C1)],
            3,
            2,
        )
        # The quota takes v4:1.2's oldest, then the cap the label's oldest.
        self.assertEqual([m.stored for m in merged], [None, 20, 30, None])
        self.assertEqual(ports((yield self.store.get("a", 0, 10, 0))), [4, 3, 1])

    @inlineCallbacks
    def test_an_entry_evicted_by_the_quota_may_come_back_in_the_same_merge(self) -> Gen:
        merged = yield self.store.merge(
            [C("a", H(10, 1), A1), C("a", H(20, 2), A2), C("a", H(5, 1), B1)], 100, 1
        )
        # Each change reports the entry as it left it: the first was evicted
        # after it, the last added the entry again, in its own group.
        self.assertEqual(merged, [Merged(None, False), Merged(20, True), Merged(5, True)])
        self.assertEqual(ports((yield self.store.get("a", 0, 10, 0))), [2, 1])
        page = yield self.store.changes("", 10, 0)
        self.assertEqual(page.changes, [C("a", H(20, 2), A2), C("a", H(5, 1), B1)])

    @inlineCallbacks
    def test_a_new_provenance_moves_an_entry_between_groups(self) -> Gen:
        yield self.store.merge([C("a", H(10, 1), A1), C("a", H(20, 2), B1)], 100, 1)
        # Entry 1 moves forward from v4:8.8: it leaves v4:1.2 for v4:8.8,
        # where it evicts the older entry 2.
        merged = yield self.store.merge([C("a", H(30, 1), B2)], 100, 1)
        self.assertEqual(merged, [Merged(30, True)])
        self.assertEqual(ports((yield self.store.get("a", 0, 10, 0))), [1])
        page = yield self.store.changes("", 10, 0)
        self.assertEqual(page.changes, [C("a", H(30, 1), B2)])
        # v4:1.2 is empty again.
        merged = yield self.store.merge([C("a", H(40, 3), A2)], 100, 1)
        self.assertEqual(merged, [Merged(40, True)])
        # A change that does not move entry 1 forward leaves it in v4:8.8 ...
        merged = yield self.store.merge([C("a", H(25, 1), C1)], 100, 1)
        self.assertEqual(merged, [Merged(30, False)])
        # ... so v4:9.9 has room, and v4:8.8 none.
        merged = yield self.store.merge([C("a", H(50, 4), C1)], 100, 1)
        self.assertEqual(merged, [Merged(50, True)])
        merged = yield self.store.merge([C("a", H(60, 5), B1)], 100, 1)
        self.assertEqual(merged, [Merged(60, True)])
        self.assertEqual(ports((yield self.store.get("a", 0, 10, 0))), [5, 4, 3])

    @inlineCallbacks
    def test_removed_purged_and_capped_entries_leave_their_group(self) -> Gen:
        """
        An entry gone from its label no longer counts: an older newcomer of
        its group is kept (it would be the group's oldest otherwise).
        """
        yield self.store.merge([C("p", H(10, 1), A1)], 100, 1)
        yield self.store.purge(15)
        yield self.store.merge([C("r", H(20, 1), A1)], 100, 1)
        yield self.store.remove("r", [H(20, 1).address])
        yield self.store.merge([C("c", H(20, 1), A1), C("c", H(30, 2)), C("c", H(40, 3))], 2, 1)
        for label in ("p", "r", "c"):
            merged = yield self.store.merge([C(label, H(5, 9), A2)], 100, 1)
            self.assertEqual(merged, [Merged(5, True)], label)
        self.assertEqual(ports((yield self.store.get("p", 0, 10, 0))), [9])
        self.assertEqual(ports((yield self.store.get("r", 0, 10, 0))), [9])
        self.assertEqual(ports((yield self.store.get("c", 0, 10, 0))), [3, 2, 9])
        # And the group is counted again from there.
        merged = yield self.store.merge([C("r", H(6, 8), A3)], 100, 1)
        self.assertEqual(merged, [Merged(6, True)])
        self.assertEqual(ports((yield self.store.get("r", 0, 10, 0))), [8])

    @inlineCallbacks
    def test_group_quota_is_per_label(self) -> Gen:
        merged = yield self.store.merge([C("a", H(10, 1), A1), C("b", H(20, 2), A2)], 100, 1)
        self.assertEqual([m.stored for m in merged], [10, 20])

    @inlineCallbacks
    def test_no_group_quota_by_default(self) -> Gen:
        yield self.store.merge([C("a", H(i, i), A1) for i in range(1, 11)], 100)
        yield self.store.merge([C("a", H(i, i), A2) for i in range(11, 21)], 100, 0)
        self.assertEqual(len((yield self.store.get("a", 0, 100, 0))), 20)
        # The groups were kept all along: a quota applies from the next
        # change of the group on.
        merged = yield self.store.merge([C("a", H(30, 30), A3)], 100, 5)
        self.assertEqual(merged, [Merged(30, True)])
        self.assertEqual(ports((yield self.store.get("a", 0, 100, 0))), [30, 20, 19, 18, 17])

    @inlineCallbacks
    def test_groups_survive_a_reopen(self) -> Gen:
        again = self.reopen_store(self.store)
        self.addCleanup(again.close)
        yield self.store.merge([C("a", H(20, 1), A1), C("a", H(30, 2), B1)], 100, 1)
        yield self.store.merge([C("a", H(40, 2), A2)], 100, 1)  # 2 moves to v4:1.2
        yield self.store.close()
        merged = yield again.merge([C("a", H(10, 3), A3), C("a", H(5, 4), B2)], 100, 1)
        self.assertEqual(merged, [Merged(None, False), Merged(5, True)])
        self.assertEqual(ports((yield again.get("a", 0, 10, 0))), [2, 4])
        merged = yield again.merge([C("a", H(50, 5), A1)], 100, 1)
        self.assertEqual(ports((yield again.get("a", 0, 10, 0))), [5, 4])


def C(label: str, entry: Entry, source: str = "", via: str = "") -> Change:
    return Change(label, entry, source, via)


def H(ts: int, n: int) -> Entry:
    """Entry number ``n`` (its port), confirmed at ``ts``."""
    return Entry(ts, "192.0.2.1", n)


def ports(entries: list[Entry]) -> list[int]:
    return [e.port for e in entries]


# Sources, by network group (halp.model.address_group).
A1, A2, A3 = "1.2.3.4", "1.2.200.9", "1.2.0.1"  # v4:1.2
B1, B2 = "8.8.8.8", "8.8.4.4"  # v4:8.8
C1 = "9.9.9.9"  # v4:9.9


class MemoryStoreTests(StoreContractMixin, TestCase):
    def make_store(self) -> IHostStore:
        return MemoryStore()


class SQLiteStoreTests(StoreContractMixin, TestCase):
    """The SQLite store on a real file, with its real database thread."""

    def make_store(self) -> IHostStore:
        return SQLiteStore(reactor, self.mktemp() + ".sqlite3")  # type: ignore[arg-type]

    def reopen_store(self, store: IHostStore) -> IHostStore:
        assert isinstance(store, SQLiteStore)
        return SQLiteStore(reactor, store.path)  # type: ignore[arg-type]
