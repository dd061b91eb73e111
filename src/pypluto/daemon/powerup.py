"""Algorithm self-tests before first use (fail closed), as Libreswan runs them at start.

``crypto/selftest.py`` holds one published known-answer vector per transform.
Pluto checks the algorithms of its default proposals and of every loaded conn
before the first SA; a conn added later is checked for the algorithms not yet
checked.  A failure at start stops pluto; a failure for a later conn refuses
that conn.  Only what a conn can use is checked, so a start does not pay for
the slow MODP parameter checks of groups nobody configured (measured: the whole
table takes 0.5-0.9 s here, 90 % of it MODP; the defaults take a few ms).
"""

from __future__ import annotations

from collections.abc import Iterable

from pypluto.config.defaults import DEFAULT_ESP, DEFAULT_IKE
from pypluto.config.model import Connection, ProposalSpec
from pypluto.crypto import registry, selftest
from pypluto.iana import TransformType


def _algs(specs: Iterable[ProposalSpec]) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    for p in specs:
        out.update((TransformType.ENCR, a.id) for a in p.encr)
        out.update((TransformType.PRF, i) for i in p.prf)
        out.update((TransformType.INTEG, i) for i in p.integ if i)
        out.update((TransformType.KE, i) for i in p.ke if i)
        for alts in p.addke:
            out.update((TransformType.KE, i) for i in alts if i)
    return out


_SpecIds = tuple[int, ...]


class PowerUpSelfTest:
    """Which algorithms passed; ``check`` runs the vectors of the ones not yet checked.

    The parser shares one ``ProposalSpec`` object among the conns that wrote the same
    ``ike=`` / ``esp=`` (``config.proposals`` caches the parse), so the algorithms of a
    conn are looked up by the identities of its specs: 10,000 conns with the same
    proposals cost one ``_algs`` each, not four (issue 18).
    """

    def __init__(self) -> None:
        self.passed: set[tuple[int, int]] = set()
        # id()s of a conn's ike and esp specs -> (those specs, kept so that the ids stay
        # theirs; the algorithms they name)
        self._memo: dict[tuple[_SpecIds, _SpecIds],
                         tuple[tuple[ProposalSpec, ...], frozenset[tuple[int, int]]]] = {}

    def _conn_algs(self, c: Connection) -> frozenset[tuple[int, int]]:
        ike, esp = c.ike or (), c.esp or ()
        key = (tuple(map(id, ike)), tuple(map(id, esp)))
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= 1024:
                self._memo.clear()
            hit = ((*ike, *esp), frozenset(_algs(ike) | _algs(esp)))
            self._memo[key] = hit
        return hit[1]

    def needed(self, conns: Iterable[Connection], defaults: bool = False
               ) -> list[registry.Algorithm]:
        keys = _algs(DEFAULT_IKE) | _algs(DEFAULT_ESP) if defaults else set()
        for c in conns:
            keys |= self._conn_algs(c)
        out = []
        for ttype, tid in sorted(keys - self.passed):
            alg = registry.get(ttype, tid)
            if alg is not None:
                out.append(alg)
        return out

    def check(self, conns: Iterable[Connection], defaults: bool = False) -> selftest.Report:
        conns = list(conns)
        if not defaults and all(self._conn_algs(c) <= self.passed for c in conns):
            return selftest.Report([], 0, 0.0)  # the usual conn: its algorithms passed
        algs = self.needed(conns, defaults)
        if not algs:  # every algorithm already passed: nothing to run or time
            return selftest.Report([], 0, 0.0)
        report = selftest.run_timed(algorithms=algs)
        if report.ok:
            self.passed.update((a.type, int(a.id)) for a in algs)
        return report
