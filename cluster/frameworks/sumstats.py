"""SumStats (Zeek's ``base/frameworks/sumstats``): observations reduced per key and epoch.

    from cluster.frameworks import sumstats as ss

    ss.create(ss.SumStat(
        name="big-talkers", epoch=300.0,
        reducers=[ss.Reducer("bytes", {ss.SUM, ss.TOPK}, topk_size=10)],
        threshold_val=lambda key, result: result["bytes"].sum,
        threshold=1e9,
        threshold_crossed=lambda key, result: ...,          # once per key and epoch
        epoch_result=lambda ts, key, result: ...,           # every key at the end of an epoch
        epoch_finished=lambda ts: ...))

    ss.observe("bytes", ss.Key(host="10.0.0.1"), 1500)     # anywhere: worker, proxy, standalone

**Order and time.**  Every observation carries its network time (``ts``, default the node's
network time).  The reduction itself (:class:`Core`) consumes observations in time order --
in standalone mode as in a cluster -- so a threshold fires at the same observation, with the
same counts, however the traffic was split over workers.  :class:`Merger` restores that order:
observations wait in a heap until every source's *watermark* (its network time minus
:data:`reorder_window`, because engine events may report a slightly earlier time than the
packet that triggered them) has passed them.  Epochs are aligned to multiples of ``epoch`` in
network time, so every node agrees on them without coordination (Zeek starts the first epoch
when the manager starts; here a trace gives the same epochs whichever worker sees what).

**Cluster.**  Workers (and proxies) buffer observations and send them to the manager in batches
(``SumStats::batch``: node, watermark, done flag, rows of ``[ts, stream, host, str, value]``) at
most every :data:`flush_interval` seconds of wall time or every :data:`batch_size` rows -- never
one message per observation.  The manager merges the batches of all workers and runs the
callbacks there (as Zeek does), so ``threshold_crossed`` may raise notices on the manager.
A worker whose watermark stayed still for :data:`idle_timeout` wall seconds (a quiet live
interface) or that went down no longer holds the others back.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

import structlog

from cluster import api
from cluster.frameworks import host as _host

log = structlog.get_logger(__name__)

__all__ = ["AVERAGE", "Core", "Key", "LAST", "MAX", "MIN", "Merger", "Reducer", "ResultVal",
           "SAMPLE", "STD_DEV", "SUM", "SumStat", "TOPK", "UNIQUE", "VARIANCE", "create", "observe",
           "reset", "stats"]

SUM, MIN, MAX, AVERAGE, VARIANCE, STD_DEV, UNIQUE, TOPK, SAMPLE, LAST = (
    "SUM", "MIN", "MAX", "AVERAGE", "VARIANCE", "STD_DEV", "UNIQUE", "TOPK", "SAMPLE", "LAST")
CALCULATIONS = frozenset((SUM, MIN, MAX, AVERAGE, VARIANCE, STD_DEV, UNIQUE, TOPK, SAMPLE, LAST))

# Options
reorder_window = 30.0     # network seconds an observation may be late against its source's time (engine
                          # events come at removal: close/attempt delays plus batch granularity)
flush_interval = 0.1      # wall seconds between a worker's batches
batch_size = 2000         # rows that make a worker send at once
idle_timeout = 5.0        # wall seconds after which a silent source no longer holds others back

BATCH = "SumStats::batch"


class Key(NamedTuple):
    """``SumStats::Key``: a host and/or a string."""
    host: str | None = None
    str: str | None = None


@dataclass
class Reducer:
    stream: str
    apply: set[str] | frozenset[str] | Iterable[str]
    pred: Callable[[Key, Any], bool] | None = None
    normalize_key: Callable[[Key], Key] | None = None
    unique_max: int | None = None
    topk_size: int = 500
    num_samples: int = 0
    num_last_elements: int = 0

    def __post_init__(self) -> None:
        self.apply = frozenset(self.apply)
        bad = self.apply - CALCULATIONS
        if bad:
            raise ValueError(f"unknown SumStats calculation(s): {', '.join(sorted(bad))}")


@dataclass
class SumStat:
    name: str
    epoch: float
    reducers: list[Reducer]
    threshold_val: Callable[[Key, dict], float] | None = None
    threshold: float | None = None
    threshold_series: list[float] | None = None
    threshold_crossed: Callable[[Key, dict], Any] | None = None
    epoch_result: Callable[[float, Key, dict], Any] | None = None
    epoch_finished: Callable[[float], Any] | None = None

    def __post_init__(self) -> None:
        if (self.threshold is not None or self.threshold_series) and self.threshold_val is None:
            raise ValueError(f"SumStat {self.name}: a threshold needs threshold_val")


class ResultVal:
    """One reducer's result for one key in one epoch (``SumStats::ResultVal``)."""

    __slots__ = ("begin", "end", "num", "sum", "min", "max", "average", "_var_s", "variance",
                 "std_dev", "unique", "unique_vals", "_topk", "samples", "sample_elements", "last",
                 "_rng")

    def __init__(self) -> None:
        self.begin = self.end = 0.0
        self.num = 0
        self.sum = 0.0
        self.min = self.max = self.average = self.variance = self.std_dev = None
        self._var_s = 0.0
        self.unique = 0
        self.unique_vals: set = set()
        self._topk: dict | None = None
        self.samples: list = []
        self.sample_elements = 0
        self.last: list = []
        self._rng: random.Random | None = None

    def topk(self, k: int | None = None) -> list[tuple[Any, int]]:
        """The most frequent values with their (space-saving, upper-bound) counts."""
        items = sorted((self._topk or {}).items(), key=lambda kv: (-kv[1], str(kv[0])))
        return items if k is None else items[:k]

    def __repr__(self) -> str:
        return (f"ResultVal(num={self.num}, sum={self.sum}, unique={self.unique}, "
                f"begin={self.begin}, end={self.end})")


def _update(r: Reducer, rv: ResultVal, ts: float, value: Any, seed: str) -> None:
    if rv.num == 0:
        rv.begin = ts
    rv.end = ts
    rv.num += 1
    ap = r.apply
    if ap == _ONLY_UNIQUE:                          # the common case (scan): one set insert
        if r.unique_max is None or len(rv.unique_vals) <= r.unique_max:
            rv.unique_vals.add(value)
        rv.unique = len(rv.unique_vals)
        return
    # a string observation counts 1.0 (Zeek: "If a string was given, fall back to 1.0 as the value")
    val = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 1.0
    if SUM in ap:
        rv.sum += val
    if MIN in ap and (rv.min is None or val < rv.min):
        rv.min = val
    if MAX in ap and (rv.max is None or val > rv.max):
        rv.max = val
    if AVERAGE in ap or VARIANCE in ap or STD_DEV in ap:
        prev = rv.average if rv.average is not None else 0.0
        rv.average = prev + (val - prev) / rv.num
        if VARIANCE in ap or STD_DEV in ap:      # Welford; sample variance as Zeek
            rv._var_s += (val - prev) * (val - rv.average)
            rv.variance = rv._var_s / (rv.num - 1) if rv.num > 1 else 0.0
            if STD_DEV in ap:
                rv.std_dev = math.sqrt(rv.variance)
    if UNIQUE in ap:
        if r.unique_max is None or len(rv.unique_vals) <= r.unique_max:
            rv.unique_vals.add(value)
        rv.unique = len(rv.unique_vals)
    if TOPK in ap:                                  # space-saving counters
        t = rv._topk if rv._topk is not None else {}
        rv._topk = t
        if value in t:
            t[value] += 1
        elif len(t) < r.topk_size:
            t[value] = 1
        else:
            victim = min(t, key=t.__getitem__)
            t[value] = t.pop(victim) + 1
    if SAMPLE in ap and r.num_samples > 0:          # reservoir, seeded per key: reproducible
        rv.sample_elements += 1
        if len(rv.samples) < r.num_samples:
            rv.samples.append(value)
        else:
            if rv._rng is None:
                rv._rng = random.Random(seed)
            j = rv._rng.randrange(rv.sample_elements)
            if j < r.num_samples:
                rv.samples[j] = value
    if LAST in ap and r.num_last_elements > 0:
        rv.last.append(value)
        if len(rv.last) > r.num_last_elements:
            del rv.last[0]


_ONLY_UNIQUE = frozenset((UNIQUE,))


class _State:
    __slots__ = ("ss", "epoch_idx", "epoch_end", "results", "tracker")

    def __init__(self, ss: SumStat) -> None:
        self.ss = ss
        self.epoch_idx: int | None = None
        self.epoch_end = math.inf
        self.results: dict[Key, dict[str, ResultVal]] = {}
        self.tracker: dict[Key, int] = {}


class Core:
    """The reduction: observations in time order in, callbacks out.  No I/O, no clock."""

    def __init__(self, host: _host.Host | None = None) -> None:
        self.host = host
        self.states: dict[str, _State] = {}
        self.by_stream: dict[str, list[tuple[_State, Reducer]]] = {}
        self.now = -math.inf
        self.observations = 0
        self.errors = 0

    def add(self, ss: SumStat) -> None:
        if ss.name in self.states:
            raise ValueError(f"SumStat {ss.name!r} exists already")
        st = self.states[ss.name] = _State(ss)
        for r in ss.reducers:
            self.by_stream.setdefault(r.stream, []).append((st, r))

    def _call(self, ts: float, fn: Callable, *args: Any) -> None:
        h = self.host
        saved = h.at if h is not None else None
        if h is not None:
            h.at = ts
        try:
            fn(*args)
        except Exception:
            self.errors += 1
            log.exception("sumstats_callback_failed", callback=getattr(fn, "__qualname__", repr(fn)))
        finally:
            if h is not None:
                h.at = saved

    def _full(self, st: _State, result: dict[str, ResultVal]) -> dict[str, ResultVal]:
        for r in st.ss.reducers:
            if r.stream not in result:
                result[r.stream] = ResultVal()
        return result

    def _finish_epoch(self, st: _State, ts: float) -> None:
        ss = st.ss
        if ss.epoch_result is not None:
            for key, result in st.results.items():
                self._call(ts, ss.epoch_result, ts, key, self._full(st, result))
        if ss.epoch_finished is not None:
            self._call(ts, ss.epoch_finished, ts)
        st.results = {}
        st.tracker = {}

    def _roll(self, st: _State, ts: float) -> None:
        ep = st.ss.epoch
        if ep is None or ep <= 0:
            return
        idx = math.floor(ts / ep)
        if st.epoch_idx is None:
            st.epoch_idx = idx
            st.epoch_end = (idx + 1) * ep
            return
        if idx > st.epoch_idx:
            self._finish_epoch(st, (st.epoch_idx + 1) * ep)
            st.epoch_idx = idx
            st.epoch_end = (idx + 1) * ep

    def advance(self, t: float) -> None:
        """Network time reached ``t``: finish the epochs that ended by then."""
        if t <= self.now:
            return
        self.now = t
        for st in self.states.values():
            if st.epoch_idx is not None:
                self._roll(st, t)

    def process(self, ts: float, stream: str, key: Key, value: Any) -> None:
        pairs = self.by_stream.get(stream)
        if not pairs:
            return
        self.observations += 1
        if ts > self.now:
            self.now = ts
        for st, r in pairs:
            k = key
            if r.normalize_key is not None:
                k = r.normalize_key(k)
            if r.pred is not None:
                try:
                    if not r.pred(k, value):
                        continue
                except Exception:
                    self.errors += 1
                    continue
            if st.epoch_idx is None or ts >= st.epoch_end:
                self._roll(st, ts)
            result = st.results.get(k)
            if result is None:
                result = st.results[k] = {}
            rv = result.get(r.stream)
            if rv is None:
                rv = result[r.stream] = ResultVal()
            _update(r, rv, ts, value, f"{st.ss.name}|{k}")
            ss = st.ss
            if ss.threshold_val is not None:
                self._check(st, k, result, ts)

    def _check(self, st: _State, key: Key, result: dict[str, ResultVal], ts: float) -> None:
        ss = st.ss
        if len(result) < len(ss.reducers):
            self._full(st, result)
        try:
            watch = ss.threshold_val(key, result)
        except Exception:
            self.errors += 1
            log.exception("sumstats_threshold_val_failed", sumstat=ss.name)
            return
        i = st.tracker.get(key, 0)
        crossed = (ss.threshold is not None and i == 0 and watch >= ss.threshold) or \
            (ss.threshold_series is not None and len(ss.threshold_series) > i and watch >= ss.threshold_series[i])
        if crossed and ss.threshold_crossed is not None:
            self._call(ts, ss.threshold_crossed, key, result)
            st.tracker[key] = i + 1

    def finish_all(self, ts: float | None = None) -> None:
        """End of input: every open epoch ends now (Zeek drains its timers at termination)."""
        t = self.now if ts is None else ts
        for st in self.states.values():
            if st.results or st.epoch_idx is not None:
                self._finish_epoch(st, t)
                st.epoch_idx = None
                st.epoch_end = math.inf


class Merger:
    """Puts observations from several sources back into time order before the Core sees them."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.heap: list[tuple[float, int, str, str | None, str | None, Any]] = []
        self.seq = 0
        self.sources: dict[str, list] = {}    # name -> [watermark, done, wall of last progress]
        self.expected: Callable[[], Iterable[str]] = lambda: ()
        self.finished = False
        self.batches = 0
        self.late = 0

    def _source(self, name: str) -> list:
        s = self.sources.get(name)
        if s is None:
            s = self.sources[name] = [-math.inf, False, time.monotonic()]
        return s

    def add(self, source: str, watermark: float, done: bool, rows: Iterable[Any]) -> None:
        heap, push = self.heap, heapq.heappush
        for row in rows:
            ts, stream, kh, ks, value = row
            if ts < self.core.now:
                self.late += 1
            self.seq += 1
            push(heap, (ts, self.seq, stream, kh, ks, value))
        s = self._source(source)
        if watermark > s[0]:
            s[0] = watermark
            s[2] = time.monotonic()
        if done:
            s[1] = True

    def source_gone(self, name: str) -> None:
        self._source(name)[1] = True

    def low_watermark(self) -> float:
        now = time.monotonic()
        names = set(self.expected()) | set(self.sources)
        low = math.inf
        for n in names:
            s = self._source(n)
            if s[1] or now - s[2] > idle_timeout:
                continue
            if s[0] < low:
                low = s[0]
        return low

    def release(self) -> None:
        """Hand the Core everything every live source has moved past."""
        low = self.low_watermark()
        heap, pop, process = self.heap, heapq.heappop, self.core.process
        while heap and heap[0][0] <= low:
            ts, _s, stream, kh, ks, value = pop(heap)
            process(ts, stream, Key(kh, ks), value)
        if low == math.inf:
            if not self.finished and self.all_done():
                self.finished = True
                self.core.finish_all()
        elif low > -math.inf:
            self.core.advance(low)

    def all_done(self) -> bool:
        """Every packet source (the workers) is done; sources without packets never are."""
        names = set(self.expected()) or set(self.sources)
        return bool(names) and all(self._source(n)[1] for n in names)


# ---- the per-process framework ---------------------------------------------------------------

_sumstats: dict[str, SumStat] = {}
_core: Core | None = None
_merger: Merger | None = None
_buf: list[list] = []
_last_flush = 0.0
_stats = {"observed": 0, "batches_sent": 0, "rows_sent": 0, "batches_received": 0, "malformed": 0}


def create(ss: SumStat) -> SumStat:
    """Register a SumStat (at import time of a script, like Zeek's ``SumStats::create``)."""
    if ss.name in _sumstats:
        raise ValueError(f"SumStat {ss.name!r} exists already")
    _sumstats[ss.name] = ss
    if _core is not None:
        _core.add(ss)
    return ss


def _engine() -> tuple[Core, Merger]:
    global _core, _merger
    if _core is None:
        h = _host.current()
        _core = Core(h)
        for ss in _sumstats.values():
            _core.add(ss)
        _merger = Merger(_core)
        if isinstance(h, _host.ClusterHost):
            _merger.expected = h.workers
    return _core, _merger


def observe(stream: str, key: Key, value: Any, ts: float | None = None) -> None:
    """``SumStats::observe``: ``value`` a number or a string (Zeek's ``$num``/``$dbl``/``$str``)."""
    h = _host.current()
    if ts is None:
        ts = h.network_time()
    _stats["observed"] += 1
    row = [ts, stream, key.host, key.str, value]
    if h.is_central:
        core, merger = _engine()
        # Standalone, this process is the packet source; the manager's own rows hold nobody back.
        wm = h.network_time() - reorder_window if h.mode == "standalone" else math.inf
        merger.add(h.name or "local", wm, False, (row,))
        if h.mode == "standalone":
            merger.release()
        return
    _buf.append(row)
    if len(_buf) >= batch_size:
        _flush(h, False)


def _flush(h: _host.Host, done: bool) -> None:
    global _buf, _last_flush
    _last_flush = time.monotonic()
    if h._clock is None:
        # No packets here (a proxy): nothing to hold the manager back for, send rows only.
        if not _buf:
            return
        wm = math.inf
    else:
        wm = math.inf if done else h.network_time() - reorder_window
    rows, _buf = _buf, []
    h.publish(api.manager_topic, BATCH, h.name, wm, done, rows)
    _host.mark_used()
    _stats["batches_sent"] += 1
    _stats["rows_sent"] += len(rows)


def stats() -> dict[str, Any]:
    out = dict(_stats)
    if _core is not None:
        out.update(processed=_core.observations, callback_errors=_core.errors, pending=len(_merger.heap),
                   late=_merger.late)
    return out


def reset() -> None:
    """Forget all state (tests; a new standalone run).  Registered SumStats stay."""
    global _core, _merger, _buf
    _core = _merger = None
    _buf = []
    for k in _stats:
        _stats[k] = 0


# ---- node events -----------------------------------------------------------------------------

@api.on(_host.TICK)
def _tick() -> None:
    h = _host.current()
    if h.mode == "manager":
        if _merger is not None:
            _merger.release()      # sources that fell silent stop holding the others back
        return
    if h.mode == "standalone":
        if _sumstats:
            _standalone_tick(h)
        return
    if _sumstats and time.monotonic() - _last_flush >= flush_interval:
        _flush(h, False)


def _standalone_tick(h: _host.Host) -> None:
    _core_, merger = _engine()
    merger.add("local", h.network_time() - reorder_window, False, ())
    merger.release()


@api.on(_host.DONE)
def _done() -> None:
    h = _host.current()
    if h.is_central:
        _core_, merger = _engine()
        merger.add(h.name or "local", math.inf, True, ())
        merger.release()
        return
    if _sumstats:
        _flush(h, True)


@api.on(BATCH)
def _batch(node: Any, watermark: Any, done: Any, rows: Any) -> None:
    h = _host.current()
    if h.mode != "manager":
        return
    if not (isinstance(node, str) and isinstance(watermark, (int, float)) and isinstance(rows, list)):
        _stats["malformed"] += 1
        return
    good = []
    for r in rows:
        if (isinstance(r, list) and len(r) == 5 and isinstance(r[0], (int, float)) and isinstance(r[1], str)
                and (r[2] is None or isinstance(r[2], str)) and (r[3] is None or isinstance(r[3], str))):
            good.append(r)
        else:
            _stats["malformed"] += 1
    _stats["batches_received"] += 1
    core, merger = _engine()
    if rows and good:
        h.saw_time(max(r[0] for r in good))
    merger.add(node, float(watermark), bool(done), good)
    merger.release()
    log.debug("sumstats_batch", node=node, rows=len(good), done=bool(done), pending=len(merger.heap))


@api.node_down
def _node_down(name: str, _node_id: str) -> None:
    h = _host.current()
    if h.mode == "manager" and _merger is not None:
        _merger.source_gone(name)
        _merger.release()
