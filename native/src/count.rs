//! The detector's per-record counting, compiled (`zeekndm._core.Counting`).
//!
//! `Counting.update(detector, rt, flow)` is `zeekndm.detect.Detector._update` step for
//! step: the track (found, created, moved to the recency end), its item (first
//! contact, cap and budget, counters), the window (latest contact per item, the
//! ordered contacts, pruning), the recorder hook, the open episode's bookkeeping and
//! the decision. It works on the detector's own Python objects (the tracks'
//! OrderedDicts, the panes' dict and list, the episodes), so a snapshot, a restore, an
//! episode's start and its alerts read exactly what the pure-Python path would have
//! left there, and the two paths can take turns on one detector. What is rare or
//! builds an alert is called back in Python: a record later than its track's window
//! (the whole record), the start of an episode, escalations and updates, eviction,
//! the budget's room-making and the window list's compaction.

use crate::observe::Rec;
use crate::state::{
    bisect_right, prefetch, prefetch_object, transport_index, window_items, Contact, Entry, Episode, Key, MapKey,
    ModelName, TKey, Track, TrackMap,
};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

const MAX_PORTS_KEPT: usize = 64;

/// How a model picks its track key and counted item from a record.
#[derive(Clone, Copy)]
enum Shape {
    /// track_by source, count destinations (the horizontal scans)
    Horizontal,
    /// track_by (source, port), count destinations
    SourcePort,
    /// track_by destination, count sources
    Destination,
}

/// A model's constants for the compiled path (`_ModelRuntime.fast`).
#[pyclass(module = "zeekndm._core", frozen)]
pub struct ModelFast {
    name: Py<PyAny>,
    /// the name as the track map's keys hold it
    name_key: ModelName,
    shape: Shape,
    window: f64,
    grain: f64,
    cap: usize,
    floor: usize,
    low: i64,
    early: bool,
    early_n: i64,
    early_ratio: f64,
    ratio: f64,
    update: f64,
    raise_on_answer: bool,
    thresholds: Vec<i64>,
    threshold_objs: Vec<Py<PyAny>>,
    sev_of_level: Vec<i64>,
}

#[pymethods]
impl ModelFast {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: Py<PyAny>,
        track_by: &str,
        count: &str,
        window: f64,
        grain: f64,
        cap: usize,
        floor: usize,
        low: i64,
        early: bool,
        early_n: i64,
        early_ratio: f64,
        ratio: f64,
        update: f64,
        raise_on_answer: bool,
        thresholds: Vec<Py<PyAny>>,
        sev_of_level: Vec<i64>,
        py: Python<'_>,
    ) -> PyResult<Self> {
        // the counted item is the address an item's peer names (the entry keeps no
        // peer of its own); a port, or another peer: the track stays a Python one
        let shape = match (track_by, count) {
            ("source", "destinations") => Shape::Horizontal,
            ("source_port", "destinations") => Shape::SourcePort,
            ("destination", "sources") => Shape::Destination,
            _ => return Err(pyo3::exceptions::PyValueError::new_err("item not the peer address")),
        };
        let values = thresholds.iter().map(|t| t.bind(py).extract::<i64>()).collect::<PyResult<Vec<i64>>>()?;
        if values.is_empty() || values.len() != sev_of_level.len() {
            return Err(pyo3::exceptions::PyValueError::new_err("levels and severities differ"));
        }
        let name_key = ModelName::new(name.bind(py).cast::<PyString>()?.to_str()?);
        Ok(ModelFast {
            name,
            name_key,
            shape,
            window,
            grain,
            cap,
            floor,
            low,
            early,
            early_n,
            early_ratio,
            ratio,
            update,
            raise_on_answer,
            thresholds: values,
            threshold_objs: thresholds,
            sev_of_level,
        })
    }
}

/// A detector's compiled counting (one per `Detector`; holds no reference to it, only
/// to its track map, which the detector never rebinds).
#[pyclass(module = "zeekndm._core", frozen)]
pub struct Counting {
    update_py: Py<PyAny>,
    na: Py<PyAny>,
    rej: Py<PyAny>,
    est: Py<PyAny>,
    abt: Py<PyAny>,
    escalated: Py<PyAny>,
    ongoing: Py<PyAny>,
    max_tracked: usize,
    budget: i64,
    lateness: f64,
    sample_size: usize,
    top_severity: i64,
    /// the detector's `_tracks`
    tracks: Py<TrackMap>,
    /// `Transport` TCP, UDP, ICMP, OTHER: an entry's transport by identity
    transports: Vec<Py<PyAny>>,
    /// whether the detector has a recorder (`Detector.recorder` sets it)
    recorder_on: AtomicBool,
    /// `DetectorStats.budget_evictions` counted here (`take_budget_evictions`)
    budget_evictions: AtomicU64,
    /// the items kept over all tracks (`n`: the detector's `_items.n`)
    n_items: AtomicI64,
}

fn get_f64(obj: &Bound<'_, PyAny>, name: &Bound<'_, pyo3::types::PyString>) -> PyResult<f64> {
    obj.getattr(name)?.extract::<f64>()
}

fn call_list<'py>(py: Python<'py>, d: Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
    Ok(PyList::new(py, [d])?.into_any().unbind())
}

fn append_short<'py>(
    py: Python<'py>,
    list: &Py<PyAny>,
    size: usize,
    v: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<()> {
    let l = list.bind(py).cast::<PyList>()?;
    if l.len() < size {
        l.append(v()?)?;
    }
    Ok(())
}

impl Counting {
    /// The index of a record's transport (`Transport._value_` in `TRANSPORTS`).
    #[inline]
    fn transport_of(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<u8> {
        for (i, t) in self.transports.iter().enumerate() {
            if obj.is(t.bind(py)) {
                return Ok(i as u8);
            }
        }
        let value = obj.getattr(intern!(py, "_value_"))?;
        let name = value.cast::<PyString>()?;
        transport_index(name.to_str()?).ok_or_else(|| pyo3::exceptions::PyValueError::new_err("not a transport"))
    }

    /// `Detector._episode_add` on a native episode.
    #[allow(clippy::too_many_arguments)]
    fn episode_add<'py>(
        &self,
        py: Python<'py>,
        ep: &mut Episode,
        ts: f64,
        port: i64,
        entry: &Entry,
        item: &dyn Fn() -> PyResult<Bound<'py, PyAny>>,
        new: bool,
        failed: bool,
        ok: bool,
    ) -> PyResult<()> {
        if new {
            // the lists a new item is added to: each a Python object of its own
            for list in [&ep.sample, &ep.uids, &ep.cids, &ep.unanswered] {
                prefetch(list.as_ptr());
            }
        }
        ep.ep_attempts += 1;
        if failed {
            ep.ep_failures += 1;
        } else if ok {
            ep.ep_successes += 1;
        }
        if ep.port_set.len() < MAX_PORTS_KEPT {
            ep.add_port(port); // the record's port (the entry keeps its first one)
        }
        ep.transport_bits |= 1 << entry.transport;
        if ts < ep.episode_start {
            ep.episode_start = ts;
        }
        let size = self.sample_size;
        if new {
            ep.ep_distinct += 1;
            ep.ep_new += 1;
            // the items are addresses: an item's peer (and its label) is the item
            let sample = ep.sample.bind(py).cast::<PyList>()?;
            if sample.len() < size {
                let item = item()?;
                if !sample.contains(&item)? {
                    sample.append(item)?;
                }
            }
            if entry.uid.is_truthy(py)? {
                append_short(py, &ep.uids, size, || Ok(entry.uid.to_py(py)))?;
            }
            if entry.cid.is_truthy(py)? {
                append_short(py, &ep.cids, size, || Ok(entry.cid.to_py(py)))?;
            }
        }
        if ok && entry.answers == 1 {
            append_short(py, &ep.answered, size, item)?;
        } else if new && failed {
            append_short(py, &ep.unanswered, size, item)?;
        }
        Ok(())
    }

    /// `Detector._decide`: no borrow of the track is held here (the Python calls read it).
    #[allow(clippy::too_many_arguments)]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        det: &Bound<'py, PyAny>,
        fast: &ModelFast,
        rt: &Bound<'py, PyAny>,
        track: &Bound<'py, Track>,
        tkey: &dyn Fn() -> PyResult<Bound<'py, PyAny>>,
        ts: f64,
        rec: &Rec<'py, '_>,
        count: i64,
        new: bool,
        failed: bool,
    ) -> PyResult<Py<PyAny>> {
        let levels = &fast.thresholds;
        let (n_failures, n_attempts, n_first, n_failed_first, n_answered, ep) = {
            let t = track.borrow();
            (
                t.n_failures,
                t.n_attempts,
                t.n_first,
                t.n_failed_first,
                t.n_answered,
                t.ep.as_ref().map(|e| e.clone_ref(py)),
            )
        };
        let mut level: i64 = -1;
        if count >= fast.low && (fast.ratio == 0.0 || (n_failures as f64) >= fast.ratio * n_attempts as f64) {
            level = 0;
            while ((level + 1) as usize) < levels.len() && count >= levels[(level + 1) as usize] {
                level += 1;
            }
        }
        let Some(ep) = ep else {
            if level >= 0 {
                return Ok(det
                    .call_method1(intern!(py, "_start"), (rt, track, tkey()?, rec.ts_obj(py)?, level, false, count))?
                    .unbind());
            }
            if fast.early
                && new
                && n_first >= fast.early_n
                && (n_failed_first as f64) >= fast.early_ratio * n_first as f64
            {
                return Ok(det
                    .call_method1(intern!(py, "_start"), (rt, track, tkey()?, rec.ts_obj(py)?, 0, true, count))?
                    .unbind());
            }
            return Ok(py.None());
        };
        let ep = ep.bind(py);
        let (sev, above, old_sev, last_emit) = {
            let mut e = ep.borrow_mut();
            if e.level < 0 || e.level as usize >= levels.len() {
                drop(e);
                // never after a start; the Python decision keeps its indexing rules
                return Ok(det
                    .call_method1(intern!(py, "_decide"), (rt, track, tkey()?, rec.ts_obj(py)?, count, new, failed))?
                    .unbind());
            }
            let above = level >= 0 || (e.early && new && failed);
            if above {
                e.last_above = ts;
            }
            if level > e.level || (level >= 0 && e.early) {
                if level > e.level {
                    e.level = level;
                }
                e.threshold = fast.threshold_objs[e.level as usize].clone_ref(py);
                e.early = false;
            }
            let mut sev = fast.sev_of_level[e.level as usize];
            if fast.raise_on_answer && n_answered != 0 && e.ep_successes != 0 {
                sev = (sev + 1).min(self.top_severity);
            }
            (sev, above, e.sev, e.last_emit)
        };
        if sev > old_sev && det.call_method1(intern!(py, "_may_escalate"), (track, rec.ts_obj(py)?))?.is_truthy()? {
            ep.borrow_mut().sev = sev;
            let d = det.call_method1(intern!(py, "_emit"), (rt, track, self.escalated.bind(py), tkey()?, count))?;
            return call_list(py, d);
        }
        if above && ts - last_emit >= fast.update {
            let d = det.call_method1(intern!(py, "_emit"), (rt, track, self.ongoing.bind(py), tkey()?, count))?;
            return call_list(py, d);
        }
        Ok(py.None())
    }
}

#[pymethods]
impl Counting {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        update_py: Py<PyAny>,
        na: Py<PyAny>,
        rej: Py<PyAny>,
        est: Py<PyAny>,
        abt: Py<PyAny>,
        escalated: Py<PyAny>,
        ongoing: Py<PyAny>,
        max_tracked: usize,
        budget: i64,
        lateness: f64,
        sample_size: usize,
        top_severity: i64,
        tracks: Py<TrackMap>,
        transports: Vec<Py<PyAny>>,
    ) -> PyResult<Self> {
        if transports.len() != crate::state::TRANSPORTS.len() {
            return Err(pyo3::exceptions::PyValueError::new_err("four transports expected"));
        }
        Ok(Counting {
            update_py,
            na,
            rej,
            est,
            abt,
            escalated,
            ongoing,
            max_tracked,
            budget,
            lateness,
            sample_size,
            top_severity,
            tracks,
            transports,
            recorder_on: AtomicBool::new(false),
            budget_evictions: AtomicU64::new(0),
            n_items: AtomicI64::new(0),
        })
    }

    /// The detector's recorder was set (`on`: not None).
    fn set_recorder(&self, on: bool) {
        self.recorder_on.store(on, Relaxed);
    }

    /// The items kept over all tracks (the budget's count).
    #[getter]
    fn n(&self) -> i64 {
        self.n_items.load(Relaxed)
    }

    #[setter]
    fn set_n(&self, n: i64) {
        self.n_items.store(n, Relaxed);
    }

    /// The budget evictions counted since the last call, zeroed.
    fn take_budget_evictions(&self) -> u64 {
        self.budget_evictions.swap(0, Relaxed)
    }

    /// `Detector._update(rt, flow)` for `detector`: None, or the detections.
    pub(crate) fn update<'py>(
        &self,
        py: Python<'py>,
        det: &Bound<'py, PyAny>,
        rt: &Bound<'py, PyAny>,
        flow: &Bound<'py, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let fast = rt.getattr(intern!(py, "fast"))?;
        let fast = fast.cast::<ModelFast>().ok().map(|f| f.clone().unbind());
        self.update_rec(py, det, rt, fast.as_ref(), &Rec::Tuple(flow.cast::<PyTuple>()?.clone()), None)
    }
}

impl Counting {
    /// `update` on a record of either kind: the one counting of both (`fast`: the
    /// runtime's `fast`, None for a model the Python counting takes; `clock`: the
    /// detector's `max_ts` when the caller has it at hand, the dispatch having just
    /// read or set it, None to read it here). Only `observe`, `advance` and a restore
    /// set `max_ts`: none of the callbacks made from here does.
    pub(crate) fn update_rec<'py>(
        &self,
        py: Python<'py>,
        det: &Bound<'py, PyAny>,
        rt: &Bound<'py, PyAny>,
        fast: Option<&Py<ModelFast>>,
        rec: &Rec<'py, '_>,
        clock: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let Some(fast) = fast else {
            return Ok(self.update_py.bind(py).call1((det, rt, rec.flow(py)?))?.unbind());
        };
        let fast = fast.get();
        let ts = rec.ts()?;
        let max_ts = || -> PyResult<f64> {
            match clock {
                Some(v) => Ok(v),
                None => get_f64(det, intern!(py, "max_ts")),
            }
        };
        // an address's key: natively for a native record (a canonical dotted quad),
        // else from its string (None: not a string, Python counts the record)
        let key_of = |i: usize| -> PyResult<Option<Key>> {
            if let Some(v) = rec.v4(i) {
                return Ok(Some(Key::V4(v)));
            }
            let o = rec.address(py, i)?;
            Ok(o.cast::<PyString>().ok().and_then(|s| s.to_str().ok().map(Key::new)))
        };
        // the record's port (the dispatch took it as an int already)
        let port = rec.port(4)?;
        let (item_at, tk) = match fast.shape {
            Shape::Horizontal => (3, key_of(1)?.map(TKey::S)),
            Shape::SourcePort => (3, key_of(1)?.map(|s| TKey::SI(s, port))),
            Shape::Destination => (1, key_of(3)?.map(TKey::S)),
        };
        let (Some(tk), Some(ikey)) = (tk, key_of(item_at)?) else {
            return Ok(self.update_py.bind(py).call1((det, rt, rec.flow(py)?))?.unbind());
        };
        let name = fast.name.bind(py);
        let mk = MapKey { model: fast.name_key.clone(), t: tk };
        let tracks = self.tracks.bind(py);
        // the track key as Python has it (`key[1]` of the map's key), made from the
        // record only when Python is called with it (an equal object: the map's key was
        // made the same way from an equal record), so a record that calls nothing back
        // touches neither the map's key tuple nor its string
        let tkey_cell: std::cell::OnceCell<Bound<'py, PyAny>> = std::cell::OnceCell::new();
        let make_tkey = || -> PyResult<Bound<'py, PyAny>> {
            Ok(match fast.shape {
                Shape::SourcePort => {
                    let p = match rec.built(4)? {
                        Some(p) => p,
                        None => port.into_pyobject(py)?.into_any(),
                    };
                    PyTuple::new(py, [&rec.address(py, 1)?, &p])?.into_any()
                }
                Shape::Horizontal => rec.address(py, 1)?,
                Shape::Destination => rec.address(py, 3)?,
            })
        };
        let tkey = || -> PyResult<Bound<'py, PyAny>> {
            if let Some(k) = tkey_cell.get() {
                return Ok(k.clone());
            }
            let k = make_tkey()?;
            Ok(tkey_cell.get_or_init(|| k).clone())
        };
        // the track: found and moved to the recency end, or created (after evicting the
        // stalest when the map is full); no borrow of the map is held across Python
        let found = {
            let mut m = tracks.borrow_mut();
            m.find_to_back(&mk).map(|i| m.map.node(i).val.track.clone_ref(py))
        };
        let track: Bound<'py, Track> = match found {
            Some(found) => {
                prefetch_object::<Track>(found.as_ptr());
                let Ok(t) = found.into_bound(py).cast_into::<Track>() else {
                    return Ok(self.update_py.bind(py).call1((det, rt, rec.flow(py)?))?.unbind());
                };
                t
            }
            None => {
                if tracks.borrow().map.len() >= self.max_tracked {
                    det.call_method0(intern!(py, "_evict_stalest"))?;
                }
                let key = PyTuple::new(py, [name, &tkey()?])?;
                let t = Bound::new(py, Track::new(py))?;
                tracks.borrow_mut().push(mk, key.into_any().unbind(), t.clone().into_any().unbind());
                t
            }
        };
        let outcome = rec.outcome(py)?;
        let failed = outcome.is(self.na.bind(py)) || outcome.is(self.rej.bind(py));
        let ok = !failed && (outcome.is(self.est.bind(py)) || outcome.is(self.abt.bind(py)));
        let window = fast.window;
        // the first part with the track borrowed: its clock, sensor, whether the item is
        // new, and the budget's decision when the track's own cap leaves room
        let mut guard = track.borrow_mut();
        // one track after another (a storm's sweepers take turns): its state is cold, so
        // ask for the lines the steps below touch at once rather than one by one
        guard.items.prefetch_ends();
        guard.win.prefetch();
        if let Some(ep) = &guard.ep {
            prefetch_object::<Episode>(ep.as_ptr());
        }
        if ts > guard.last_ts {
            guard.last_ts = ts;
        }
        if guard.sensor.is_none(py) {
            if let Some(sensor) = rec.sensor(py)? {
                guard.sensor = sensor.unbind();
            }
        }
        let existing = guard.items.find(&ikey);
        let new = existing.is_none();
        let mut full = new && guard.items.len() >= fast.cap;
        if new && !full {
            let mut n = self.n_items.load(Relaxed);
            if n >= self.budget {
                // `_room_for`: a track holding what reaches every threshold makes room
                // itself; so does one when the stalest track is itself, or is active and
                // this one reached the lowest threshold (a storm of sweepers); else
                // Python evicts (and counts the eviction itself)
                let size = guard.items.len();
                let own_room = size >= fast.floor || {
                    let m = tracks.borrow();
                    let head = m.map.head();
                    if m.map.len() <= 1 {
                        true // the loop does not run: no room
                    } else {
                        let stalest = m.map.node(head).val.track.bind(py);
                        if stalest.is(&track) {
                            true
                        } else {
                            match stalest.cast::<Track>().ok().and_then(|st| st.try_borrow().ok()) {
                                Some(st) => {
                                    let active_since = max_ts()? - window;
                                    st.last_ts >= active_since && size as i64 >= fast.low
                                }
                                None => false,
                            }
                        }
                    }
                };
                if own_room {
                    self.budget_evictions.fetch_add(1, Relaxed);
                    full = true;
                } else {
                    drop(guard);
                    full = !det.call_method1(intern!(py, "_room_for"), (&track, rt))?.is_truthy()?;
                    guard = track.borrow_mut();
                    if !full {
                        n = self.n_items.load(Relaxed);
                    }
                }
            }
            if !full {
                self.n_items.store(n + 1, Relaxed);
            }
        }
        let recorder = if self.recorder_on.load(Relaxed) {
            let r = det.getattr(intern!(py, "_recorder"))?;
            if r.is_none() {
                None
            } else {
                Some(r)
            }
        } else {
            None
        };
        let t = &mut *guard;
        let idx = match existing {
            None => {
                let entry = Entry {
                    first: ts,
                    last: ts,
                    attempts: 0,
                    failures: 0,
                    answers: 0,
                    port,
                    transport: match rec.transport_obj()? {
                        Some(t) => self.transport_of(py, &t)?,
                        None => rec.native_tidx().unwrap_or(3),
                    },
                    uid: rec.text(7)?,
                    cid: rec.text(8)?,
                    epoch: t.epoch,
                };
                let i = if full {
                    // the per-source cap, or the global budget: the oldest item makes room
                    let (i, old) = t.items.replace_front(ikey.clone(), entry);
                    if let Some((old_key, old)) = old {
                        if old.last >= t.last_ts - window {
                            t.capped = true;
                        }
                        t.win.latest.remove(&old_key);
                    }
                    i
                } else {
                    t.items.push_back(ikey.clone(), entry)
                };
                t.n_first += 1;
                if failed {
                    t.n_failed_first += 1;
                }
                i
            }
            Some(i) => {
                t.items.move_back(i);
                let e = &mut t.items.node_mut(i).val;
                if ts > e.last {
                    e.last = ts;
                } else if ts < e.first {
                    e.first = ts;
                }
                i
            }
        };
        let answered_before;
        {
            let e = &mut t.items.node_mut(idx).val;
            e.attempts += 1;
            answered_before = e.answers;
            if failed {
                e.failures += 1;
            } else if ok {
                e.answers += 1;
            }
        }
        t.n_attempts += 1;
        if failed {
            t.n_failures += 1;
        } else if ok && answered_before == 0 {
            t.n_answered += 1;
        }
        let horizon = t.last_ts - window;
        let n_items = t.items.len();
        let count: i64;
        let mut late_capped_check = false;
        let is_late = ts < horizon;
        if is_late {
            // a late record, older than the current window: the busiest window holding
            // it, counted over the contacts kept from the recent past (exact)
            let max_ts = max_ts()?;
            let key_c = t.items.node(idx).key.clone();
            let pane = &mut t.win;
            let at = bisect_right(&pane.order, ts, pane.keep, pane.head);
            pane.order.insert(at, Contact { t: ts, key: key_c });
            pane.head += 1;
            if pane.head - pane.keep > n_items + 16 {
                pane.prune(horizon, max_ts - self.lateness - window, n_items + 16);
            }
            let need = if t.ep.is_none() && recorder.is_none() { fast.low.max(0) as usize } else { 0 };
            let (c, at) = t.win.past_window(ts, window, need);
            count = c as i64;
            let late_items = match &at {
                None => py.None().into_bound(py),
                Some(at) => window_items(py, &t.win, at)?.into_any(),
            };
            det.setattr(intern!(py, "_late_items"), late_items)?;
            late_capped_check = at.is_some() && ts - window < t.win.past_from;
        } else {
            let pane = &mut t.win;
            let (i, pushed) = pane.latest.find_or_push_back(&ikey, || ts);
            let refresh = pushed || {
                let seen = pane.latest.node(i).val;
                if ts >= seen + fast.grain {
                    pane.latest.node_mut(i).val = ts;
                    true
                } else {
                    false
                }
            };
            if refresh {
                let contact = Contact { t: ts, key: t.items.node(idx).key.clone() };
                match pane.order.last() {
                    Some(last) if ts < last.t => {
                        let n = pane.order.len();
                        let at = bisect_right(&pane.order, ts, pane.head, n);
                        pane.order.insert(at, contact);
                    }
                    _ => pane.order.push(contact),
                }
            }
            if pane.head < pane.order.len() && pane.order[pane.head].t < horizon {
                let max_ts = max_ts()?;
                pane.prune(horizon, max_ts - self.lateness - window, n_items + 16);
            } else if pane.order.len() - pane.head > fast.cap * 2 {
                pane.compact(); // a fast sweeper: keep the list to what the cap holds
            }
            count = pane.latest.len() as i64;
        }
        let ep = t.ep.as_ref().map(|e| e.clone_ref(py));
        let n_first = t.n_first;
        if let Some(ep_open) = &ep {
            let mut e = ep_open.bind(py).borrow_mut();
            let entry = &t.items.node(idx).val;
            let item = || rec.address(py, item_at);
            self.episode_add(py, &mut e, ts, port, entry, &item, new, failed, ok)?;
        }
        if ep.is_none() {
            if count < fast.low && (!new || n_first < fast.early_n) {
                drop(guard);
                if let Some(r) = &recorder {
                    r.call_method1(intern!(py, "counted"), (name, tkey()?, rec.ts_obj(py)?, &outcome, count, n_items))?;
                }
                return Ok(py.None());
            }
            if is_late && late_capped_check {
                t.capped = true; // the oldest contacts of that window were let go
            }
        }
        drop(guard);
        if let Some(r) = &recorder {
            r.call_method1(intern!(py, "counted"), (name, tkey()?, rec.ts_obj(py)?, &outcome, count, n_items))?;
        }
        self.decide(py, det, fast, rt, &track, &tkey, ts, rec, count, new, failed)
    }
}
