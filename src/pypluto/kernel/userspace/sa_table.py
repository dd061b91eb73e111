"""The SA table of the userspace plane: ESP/AH state by (destination, SPI), by SPI, by reqid.

Written by the daemon's thread under the plane's lock; the packet threads
only read ``by_spi`` and the ``outbound_for`` lookups, whose dictionaries are
updated one key at a time (atomic under the GIL).

Memory (issue 18: 10,000 IKE+Child pairs): the SA states have slots, an
AES-GCM-16/ChaCha20 SA builds its cipher (about 2.5 KB of OpenSSL contexts)
only with its first packet, and SAs with equal selectors share one selector
list and one inbound check.  ``python -m bench.sa_memory`` measures it: about
1 KB of RSS per installed pair, against 11 KB before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

from pypluto.kernel import ah, esp
from pypluto.kernel.userspace.selectors import shared_ts
from pypluto.params import IPAddress, PolicyParams, SAExpire, SAParams, SAStats

SAState = esp.InboundSA | esp.OutboundSA | ah.InboundAH | ah.OutboundAH
Inbound = (esp.InboundSA, ah.InboundAH)
Outbound = (esp.OutboundSA, ah.OutboundAH)
OutState = esp.OutboundSA | ah.OutboundAH


def _same_kind(old: SAState | None, new: SAState) -> bool:
    """Both ESP or both AH, same direction (the ESP classes of the AEAD fast paths are
    subclasses of InboundSA / OutboundSA)."""
    for cls in (esp.InboundSA, esp.OutboundSA, ah.InboundAH, ah.OutboundAH):
        if isinstance(new, cls):
            return isinstance(old, cls)
    return False


SAKey = tuple[str, int]  # (destination, SPI)


class _Groups:
    """Outbound SAs grouped by reqid or by peer address, oldest first.

    When the SA an index serves is removed, the newest remaining SA of its group
    takes over: found here in O(1) instead of by a scan of every SA, which made
    the removal of N Child SAs to one peer, newest first, O(N^2) (10,000: 93 s
    under the plane's lock).  Members keep their place when updated in place and
    go last when re-keyed (MOBIKE), as in the table's own order.
    """

    __slots__ = ("_members",)

    def __init__(self) -> None:
        # a group of one is its (key, state) pair: most reqids have one SA, and a
        # dict each would cost ~170 B more per Child SA (bench.sa_memory)
        self._members: dict[object, tuple[SAKey, OutState] | dict[SAKey, OutState]] = {}

    def add(self, group: object, key: SAKey, state: OutState) -> None:
        members = self._members.get(group)
        if members is None or (isinstance(members, tuple) and members[0] == key):
            self._members[group] = (key, state)
        elif isinstance(members, tuple):
            self._members[group] = {members[0]: members[1], key: state}
        else:
            members[key] = state

    def discard(self, group: object, key: SAKey) -> OutState | None:
        """Forget one member; the newest one left in its group, or None."""
        members = self._members.get(group)
        if members is None:
            return None
        if isinstance(members, tuple):
            if members[0] != key:
                return members[1]
            del self._members[group]
            return None
        members.pop(key, None)
        if len(members) == 1:
            self._members[group] = next(iter(members.items()))
        return next(reversed(members.values()))

    def clear(self) -> None:
        self._members.clear()


class SATable:
    """Every installed SA and the indexes the packet paths use (RFC 4301 §4.4.2 SAD)."""

    def __init__(self) -> None:
        self._sas: dict[tuple[str, int], SAState] = {}
        self.by_spi: dict[int, esp.InboundSA] = {}  # inbound lookup (RFC 4303 §3.4.2)
        self.ah_by_spi: dict[int, ah.InboundAH] = {}  # the same for AH (RFC 4302 §3.4.2)
        self._out_by_reqid: dict[int, OutState] = {}
        self._out_by_peer: dict[str, OutState] = {}
        self._reqid_groups = _Groups()  # every outbound SA by reqid (0: none) ...
        self._peer_groups = _Groups()  # ... and by destination
        # inbound SAs removed after a rekey that by_spi / ah_by_spi still serve: SPI ->
        # (state, monotonic deadline), oldest first (see retire)
        self.retired: dict[int, tuple[SAState, float]] = {}

    def __len__(self) -> int:
        return len(self._sas)

    def get(self, dst: IPAddress, spi: int) -> SAState | None:
        return self._sas.get((str(dst), spi))

    def stats(self, dst: IPAddress, spi: int) -> SAStats | None:
        """A copy of one SA's counters (bytes, packets, replay/integrity/selector/malformed
        drops)."""
        state = self.get(dst, spi)
        if state is None:
            return None
        s = state.stats
        return SAStats(bytes=s.bytes, packets=s.packets, last_used=s.last_used,
                       replay_drops=s.replay_drops, integrity_failures=s.integrity_failures,
                       selector_drops=s.selector_drops, malformed=state.malformed)

    def add(self, sa: SAParams, on_expire: Callable[[SAExpire], None] | None,
            selector_check: Callable[[bytes], bool] | None) -> SAState:
        """Install (or update: the window, sequence number and counters carry over) one SA.

        The SA's selector lists are replaced by the shared ones of every SA with the
        same selectors (:func:`.selectors.shared_ts`), so that the engine's copies go.
        """
        sa.local_ts = shared_ts(sa.local_ts)
        sa.remote_ts = shared_ts(sa.remote_ts)
        state: SAState = (ah.make_sa(sa, on_expire) if sa.protocol == "ah"
                          else esp.make_sa(sa, on_expire))
        dst = str(sa.dst)  # formatted once (issue 18)
        key = (dst, sa.spi)
        old = self._sas.get(key)  # None for a new SA: nothing carries over
        if isinstance(state, Inbound):
            if old is not None and _same_kind(old, state):  # an update keeps the window
                assert isinstance(old, Inbound)
                state.stats, state.top, state.bitmap = old.stats, old.top, old.bitmap
            state.selector_check = selector_check
            self._sas[key] = state
            if isinstance(state, ah.InboundAH):
                self.ah_by_spi[sa.spi] = state
            else:
                self.by_spi[sa.spi] = state
        else:
            if old is not None and _same_kind(old, state):
                assert isinstance(old, Outbound)
                state.stats, state.seq = old.stats, old.seq
                if old.params.reqid != sa.reqid:
                    self._reqid_groups.discard(old.params.reqid, key)
            self._sas[key] = state
            self._reqid_groups.add(sa.reqid, key, state)
            self._peer_groups.add(dst, key, state)
            if sa.reqid:
                self._out_by_reqid[sa.reqid] = state
            self._out_by_peer[dst] = state
        return state

    def move(self, dst: IPAddress, spi: int, new_src: IPAddress, new_dst: IPAddress,
             encap_sport: int | None, encap_dport: int | None) -> bool:
        """MOBIKE (RFC 4555 §3.5): re-key one SA under its new destination; its state
        (keys, sequence number, replay window, counters) is the same object.

        ``dst`` is where the SA is installed now (after an earlier move: where that
        move put it).  Moving an SA to where it already is only changes its ports.
        False when there is no SA (``dst``, ``spi``).
        """
        key = (str(dst), spi)
        state = self._sas.get(key)
        if state is None:
            return False
        old = state.params
        state.params = dataclasses.replace(old, src=new_src, dst=new_dst,
                                           encap_sport=encap_sport, encap_dport=encap_dport)
        new_key = (str(new_dst), spi)
        if new_key != key:
            del self._sas[key]
            self._sas[new_key] = state
        if isinstance(state, Outbound):
            if new_key != key:  # it goes last in its groups, as in the table
                self._reqid_groups.discard(old.reqid, key)
                self._reqid_groups.add(old.reqid, new_key, state)
                # another SA to the old address, if any, serves it now
                _take_over(self._out_by_peer, key[0], state,
                           self._peer_groups.discard(key[0], key))
                self._peer_groups.add(new_key[0], new_key, state)
            self._out_by_peer[new_key[0]] = state
        return True

    def remove(self, dst: IPAddress, spi: int) -> SAState | None:
        """Forget one SA; an older outbound SA of the same pair takes over its indexes."""
        key = (str(dst), spi)
        state = self._sas.pop(key, None)
        if state is None:
            return None
        if isinstance(state, Inbound):
            for index in (self.by_spi, self.ah_by_spi):
                if index.get(spi) is state:
                    del index[spi]
            return state
        p = state.params
        _take_over(self._out_by_reqid, p.reqid, state, self._reqid_groups.discard(p.reqid, key))
        _take_over(self._out_by_peer, key[0], state, self._peer_groups.discard(key[0], key))
        return state

    def retire(self, dst: IPAddress, spi: int, until: float) -> SAState | None:
        """:meth:`remove` for an inbound SA whose Child SA was rekeyed, except that the
        packet paths (``by_spi`` / ``ah_by_spi``) keep it until ``until``
        (:meth:`reap`): the peer may have sent on it just before it switched, and
        those packets can still wait in a socket queue.  It is gone from everything
        else (:meth:`get`, :meth:`stats`, :meth:`traffic`, ``len``) at once and
        reports no more lifetime expiries.  An outbound SA is removed as usual."""
        key = (str(dst), spi)
        state = self._sas.get(key)
        if state is None or not isinstance(state, Inbound):
            return self.remove(dst, spi)
        del self._sas[key]
        state.on_expire = None
        index = self.ah_by_spi if isinstance(state, ah.InboundAH) else self.by_spi
        if index.get(spi) is state:
            self.retired.pop(spi, None)
            self.retired[spi] = (state, until)
        return state

    def reap(self, now: float) -> float | None:
        """Drop the retired SAs whose time is up; the next deadline, or None."""
        retired = self.retired
        while retired:
            spi, (state, until) = next(iter(retired.items()))
            if until > now:
                return until
            del retired[spi]
            for index in (self.by_spi, self.ah_by_spi):
                if index.get(spi) is state:
                    del index[spi]
        return None

    def traffic(self, index: Mapping[int, tuple[IPAddress, str, str]]
                ) -> Iterator[tuple[int, int, int]]:
        """``(spi, bytes, packets)`` of every SA that carried traffic and that ``index``
        (SPI -> (destination, ...)) names with its destination: the counters read in
        place, no lookup and no copy per SA."""
        for (_dst, spi), state in list(self._sas.items()):
            s = state.stats
            if s.bytes or s.packets:
                meta = index.get(spi)
                if meta is not None and meta[0] == state.params.dst:
                    yield spi, s.bytes, s.packets

    def outbound_for(self, policy: PolicyParams) -> OutState | None:
        """The outbound SA of a policy: by reqid, else the newest SA to its tunnel end."""
        osa = self._out_by_reqid.get(policy.reqid) if policy.reqid else None
        if osa is None:
            osa = self._out_by_peer.get(str(policy.tmpl_dst))
        return osa

    def clear(self) -> None:
        self._sas.clear()
        self.retired.clear()
        self.by_spi.clear()
        self.ah_by_spi.clear()
        self._out_by_reqid.clear()
        self._out_by_peer.clear()
        self._reqid_groups.clear()
        self._peer_groups.clear()


def _take_over(index: dict, name: object, gone: OutState, heir: OutState | None) -> None:
    """``index[name]`` served ``gone``: it serves ``heir`` now, or nothing."""
    if index.get(name) is gone:
        if heir is None:
            del index[name]
        else:
            index[name] = heir
