"""
The interfaces between HALP's core and its backends.

Every method returns a :class:`~twisted.internet.defer.Deferred`, in-memory
backends included, so that the core never knows whether a store is local,
on a thread or across the network.  ``halp.test.test_store`` holds the one
contract test suite that every implementation passes.
"""

from __future__ import annotations

from typing import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from halp.model import Census, Change, ChangePage, Entry, LabelInfo, Merged

__all__ = ["IConnectedStore", "IHostStore", "IProber"]


class IHostStore(Interface):
    """
    Where a HALP server keeps its labels, their entries and the label index.

    The store applies the merge rules atomically: a confirmed time only moves
    forward, and a label never keeps more entries than the caller allows.
    Validation, clamping of times and expiry policy belong to the caller
    (:class:`halp.core.HALPCore`), which passes the numbers in.

    Entries of a label are ordered newest first; entries with the same time
    are ordered by host, then port, so that slices are stable.
    """

    name = Attribute("A short name for logs and metrics, such as 'sqlite'.")

    def merge(
        changes: Sequence[Change], max_entries: int, max_per_group: int = 0
    ) -> Deferred[list[Merged]]:
        """
        Merge each change into its label, in order, in one atomic step.

        An entry already in its label keeps the later of its stored and its
        new time; when the change moves the time forward (or adds the
        entry), the entry takes the change's provenance (``source`` and
        ``via``) and its network group, and moves to the end of the change
        feed (:meth:`changes`).  A change that does not move the time
        forward changes nothing, its entry's group included.

        The group of a change is :func:`halp.model.address_group` of its
        ``source``; the store keeps each entry's group with it (across
        restarts, and for every process sharing the data set), and an entry
        leaves its group when it leaves the label (eviction, :meth:`remove`,
        :meth:`purge`) or takes another one.  The group ``""`` (source
        ``""``: a server's own entries) is exempt: never counted, never
        limited.  When ``max_per_group`` is positive, as soon as a change
        adds its entry or moves its time forward, and while its label then
        holds more than ``max_per_group`` entries of the change's (non-empty)
        group, that group's oldest-confirmed entry in the label is evicted
        (of equal times, the one last in the label's order), the new entry
        itself if it is that one.  No entry of another group is ever
        evicted by this quota.

        Then, once every change is merged, while a label named by a change
        holds more than ``max_entries`` entries, its oldest-confirmed entry
        (of equal times, the one last in the label's order) is evicted.
        Entries evicted by the quota or by the cap leave the store and the
        change feed exactly as removed ones do.  The label index is updated
        for each label and each of its ancestors: its time becomes the
        latest stored time of an entry kept by this merge, if that is later.

        Finding a group's count and oldest entry is indexed: a merge costs
        no more than ``O(log n)`` per change in the size ``n`` of a label,
        plus ``O(max_per_group)`` in SQLite, plus the evictions it makes.

        :param changes: valid labels and entries, with times already
            clamped to "now".
        :param max_entries: the per-label cap, at least 1.
        :param max_per_group: the per-label quota of each network group,
            or ``0`` (the default) for no quota.
        :return: a Deferred firing with one :class:`~halp.model.Merged`
            per change, in order: the entry's stored time once that change
            was merged (``None`` if this merge evicted the entry, by the
            quota or by the cap, then or after it) and whether the change
            changed the store (``False`` when it was evicted so).
            It fails with
            :class:`halp.error.StoreError` if the merge could not be made
            durable; then nothing of it was applied, except when a store
            across a network lost its answer (a timeout), in which case
            the merge may have been applied.  Merging the same changes
            again is always harmless.
        """

    def changes(cursor: str, limit: int, since: int) -> Deferred[ChangePage]:
        """
        The change feed: up to ``limit`` entries whose latest change came
        after ``cursor``, in the order of those changes, each with its
        provenance, leaving out entries confirmed before ``since``.

        Every entry appears in the feed once, at the place of its latest
        change; evicted, removed and purged entries leave it.  A cursor
        this store did not make (``""``, another store's, or one from
        before the store's data was wiped) means "from the beginning".

        :return: a Deferred firing with a :class:`~halp.model.ChangePage`
            of up to ``limit`` changes, whose cursor continues after the
            last change returned (the cursor asked for, in this store's
            numbering, when none is), or failing with
            :class:`halp.error.StoreError`.
        """

    def get(label: str, start: int, stop: int, since: int) -> Deferred[list[Entry]]:
        """
        Entries ``start`` to ``stop - 1`` of ``label``, newest first, leaving
        out (and stopping at) entries confirmed before ``since``.

        The cost of a ``get`` grows with ``stop``, not with the size of the
        label.

        :return: a Deferred firing with a list of :class:`~halp.model.Entry`, empty for
            an unknown label, or failing with :class:`halp.error.StoreError`.
        """

    def list_labels(
        parent: str, start: int, stop: int, since: int
    ) -> Deferred[list[LabelInfo]]:
        """
        Index rows ``start`` to ``stop - 1`` of the direct sublabels of
        ``parent`` (``""`` for the top-level labels), newest activity first
        (ties by name), leaving out rows whose time is before ``since``.

        :return: a Deferred firing with a list of :class:`~halp.model.LabelInfo` carrying
            full label names.
        """

    def census(since: int, limit: int) -> Deferred[Census]:
        """
        Count what the store holds, for metrics and the status page.

        Only labels that hold entries count, and only those whose label
        index time is ``since`` or later (older ones hold only expired
        entries).  Their entries are counted as stored: entries that
        expired since the last :meth:`purge` are included.  The cost grows
        with the number of labels, not with the number of entries.

        :return: a Deferred firing with a :class:`~halp.model.Census` whose
            ``busiest`` lists up to ``limit`` labels, most recently active
            first (ties by name), or failing with
            :class:`halp.error.StoreError`.
        """

    def remove(label: str, addresses: Sequence[tuple[str, int]]) -> Deferred[int]:
        """
        Delete the entries of ``label`` whose ``(host, port)`` is in
        ``addresses``, in one atomic step.  Addresses that are not in the
        label are ignored.  The label index keeps its times (they record
        activity, not contents) but no longer counts the removed entries
        towards the cap.

        :return: a Deferred firing with the number of entries deleted, or
            failing with :class:`halp.error.StoreError`; then nothing was
            deleted.
        """

    def get_state(key: str) -> Deferred[str | None]:
        """
        The document last saved under ``key`` by :meth:`put_state`.

        State documents are small texts (JSON, in practice) that HALP keeps
        beside the entries: a client's table of known servers, a server's
        table of peers.  They never expire and :meth:`purge` leaves them
        alone.

        :param key: a short name such as ``client/servers``.
        :return: a Deferred firing with the text, or ``None`` if nothing
            was saved under ``key``.
        """

    def put_state(key: str, value: str | None) -> Deferred[None]:
        """
        Save ``value`` under ``key``, replacing what was there; ``None``
        deletes the key.

        :return: a Deferred firing once the document is as durable as an
            acknowledged insert, or failing with
            :class:`halp.error.StoreError`; then the old document stands.
        """

    def purge(before: int) -> Deferred[int]:
        """
        Delete every entry and index row whose time is before ``before``.

        :return: a Deferred firing with the number of entries deleted.
        """

    def close() -> Deferred[None]:
        """
        Finish pending work and release resources; the store is not used
        afterwards.

        :return: a Deferred firing when every acknowledged write is durable
            and the store is closed.
        """


class IConnectedStore(Interface):
    """
    A store that works over a connection to a server (Redis), as opposed to
    a file or memory: it connects when started, and answers operations with
    :class:`halp.error.StoreError` while that server is out of reach.
    """

    shared_node = Attribute(
        "The node name that every server process on this store's data set"
        " announces in ``hello`` (they are one server to the outside), once"
        " the store has connected; ``None`` before."
    )

    def start() -> None:
        """
        Begin connecting now rather than on first use, so that problems
        (an unreachable server, a wrong password, data kept nowhere on
        disk) are logged when the HALP server starts.  Called by
        ``twistd halp`` once it is running (after any fork); idempotent.
        """


class IProber(Interface):
    """
    Confirms that a host named by an entry is there, before a server
    serves the entry (see :mod:`halp.verify`).
    """

    def probe(host: str, port: int, halp: bool) -> Deferred[None]:
        """
        Reach ``host port`` once.

        :param halp: whether the entry claims a HALP server (a ``halp``
            label), which must then answer ``hello`` as one.
        :return: a Deferred firing with ``None`` once the host answered,
            or failing with :class:`halp.verify.ProbeFailed` saying why
            not (refused, timed out, not HALP, not routable).
        """
