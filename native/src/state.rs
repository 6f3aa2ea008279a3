//! A track's counting state in native memory (`zeekndm._core.Track`, `Episode`).
//!
//! The same state as `zeekndm.detect._Track` / `_Pane` / `_Episode`, for models whose
//! counted item is an address (the horizontal scans, fan-out on one port, exposure):
//! the items in recency order, the window's latest contact per item in insertion
//! order, the ordered contacts with the window's head and the kept past, and the
//! counters. Python reads it through the same attribute names and a few methods
//! (`size`, `window_count`, `evidence`, `new_episode`, `to_dict`, `from_dict`), so the
//! lifecycle (`_start`, `_emit`, `_end`, `_sweep`, snapshots) is the Python code for
//! both kinds of track, and a snapshot written by either restores into either.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyTuple};
use std::collections::HashMap;
use std::sync::Arc;

const NIL: usize = usize::MAX;

pub struct Node<V> {
    pub key: Arc<str>,
    pub obj: Py<PyAny>,
    pub val: V,
    prev: usize,
    next: usize,
}

/// A map keyed by strings that keeps an order (insertion, or recency with
/// `move_back`), like a dict or an OrderedDict.
pub struct LinkedMap<V> {
    index: HashMap<Arc<str>, usize>,
    nodes: Vec<Option<Node<V>>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
}

impl<V> LinkedMap<V> {
    pub fn new() -> Self {
        LinkedMap { index: HashMap::new(), nodes: Vec::new(), free: Vec::new(), head: NIL, tail: NIL }
    }
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn find(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }
    pub fn node(&self, i: usize) -> &Node<V> {
        self.nodes[i].as_ref().expect("live node")
    }
    pub fn node_mut(&mut self, i: usize) -> &mut Node<V> {
        self.nodes[i].as_mut().expect("live node")
    }
    fn unlink(&mut self, i: usize) {
        let (prev, next) = {
            let n = self.node(i);
            (n.prev, n.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
    }
    fn link_back(&mut self, i: usize) {
        let tail = self.tail;
        {
            let n = self.node_mut(i);
            n.prev = tail;
            n.next = NIL;
        }
        if tail == NIL {
            self.head = i;
        } else {
            self.node_mut(tail).next = i;
        }
        self.tail = i;
    }
    pub fn push_back(&mut self, key: Arc<str>, obj: Py<PyAny>, val: V) -> usize {
        let node = Node { key: key.clone(), obj, val, prev: NIL, next: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        self.index.insert(key, i);
        self.link_back(i);
        i
    }
    pub fn move_back(&mut self, i: usize) {
        if self.tail != i {
            self.unlink(i);
            self.link_back(i);
        }
    }
    fn take(&mut self, i: usize) -> Node<V> {
        self.unlink(i);
        let node = self.nodes[i].take().expect("live node");
        self.index.remove(&node.key);
        self.free.push(i);
        node
    }
    pub fn pop_front(&mut self) -> Option<Node<V>> {
        if self.head == NIL {
            None
        } else {
            Some(self.take(self.head))
        }
    }
    pub fn remove(&mut self, key: &str) -> Option<Node<V>> {
        let i = self.find(key)?;
        Some(self.take(i))
    }
    pub fn order(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.len());
        let mut i = self.head;
        while i != NIL {
            out.push(i);
            i = self.node(i).next;
        }
        out
    }
}

/// One item of a track: `_Track.items`' list, field for field.
pub struct Entry {
    pub first: f64,
    pub last: f64,
    pub attempts: i64,
    pub failures: i64,
    pub answers: i64,
    pub port: Py<PyAny>,
    pub transport: Py<PyAny>,
    pub uid: Py<PyAny>,
    pub cid: Py<PyAny>,
    pub peer: Py<PyAny>,
    pub epoch: i64,
}

impl Entry {
    pub fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            [
                self.first.into_pyobject(py)?.into_any(),
                self.last.into_pyobject(py)?.into_any(),
                self.attempts.into_pyobject(py)?.into_any(),
                self.failures.into_pyobject(py)?.into_any(),
                self.answers.into_pyobject(py)?.into_any(),
                self.port.bind(py).clone(),
                self.transport.bind(py).clone(),
                self.uid.bind(py).clone(),
                self.cid.bind(py).clone(),
                self.peer.bind(py).clone(),
                self.epoch.into_pyobject(py)?.into_any(),
            ],
        )
    }

    fn from_list(v: &Bound<'_, PyAny>) -> PyResult<Entry> {
        let l = v.cast::<PyList>()?;
        if l.len() != 11 {
            return Err(PyValueError::new_err("a track item has 11 fields"));
        }
        Ok(Entry {
            first: l.get_item(0)?.extract()?,
            last: l.get_item(1)?.extract()?,
            attempts: l.get_item(2)?.extract()?,
            failures: l.get_item(3)?.extract()?,
            answers: l.get_item(4)?.extract()?,
            port: l.get_item(5)?.unbind(),
            transport: l.get_item(6)?.unbind(),
            uid: l.get_item(7)?.unbind(),
            cid: l.get_item(8)?.unbind(),
            peer: l.get_item(9)?.unbind(),
            epoch: l.get_item(10)?.extract()?,
        })
    }
}

/// A contact in the window list: (time, item).
pub struct Contact {
    pub t: f64,
    pub key: Arc<str>,
    pub obj: Py<PyAny>,
}

impl Contact {
    fn clone_ref(&self, py: Python<'_>) -> Contact {
        Contact { t: self.t, key: self.key.clone(), obj: self.obj.clone_ref(py) }
    }
}

/// `_Pane`.
pub struct Pane {
    pub latest: LinkedMap<f64>,
    pub order: Vec<Contact>,
    pub head: usize,
    pub keep: usize,
    pub past_from: f64,
}

/// The first index from `lo` (below `hi`) whose time is greater than `t`.
pub fn bisect_right(order: &[Contact], t: f64, lo: usize, hi: usize) -> usize {
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if t < order[mid].t {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The first index from `lo` whose time is not below `t`.
fn bisect_left(order: &[Contact], t: f64, lo: usize, hi: usize) -> usize {
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if order[mid].t < t {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl Pane {
    fn new() -> Self {
        Pane { latest: LinkedMap::new(), order: Vec::new(), head: 0, keep: 0, past_from: f64::NEG_INFINITY }
    }

    pub fn prune(&mut self, horizon: f64, keep_horizon: f64, past_cap: usize) {
        let n = self.order.len();
        let mut head = self.head;
        while head < n {
            let c = &self.order[head];
            if c.t >= horizon {
                break;
            }
            if let Some(i) = self.latest.find(&c.key) {
                if self.latest.node(i).val == c.t {
                    let key = c.key.clone();
                    self.latest.remove(&key);
                }
            }
            head += 1;
        }
        let mut keep = self.keep;
        while keep < head && self.order[keep].t < keep_horizon {
            keep += 1;
        }
        if head - keep > past_cap {
            keep = head - past_cap;
            self.past_from = self.order[keep].t;
        }
        if keep > 64 && keep * 2 > n {
            self.order.drain(..keep);
            head -= keep;
            keep = 0;
        }
        self.head = head;
        self.keep = keep;
    }

    pub fn compact(&mut self, py: Python<'_>) {
        let mut out: Vec<Contact> =
            self.order[self.keep..self.head].iter().map(|c| c.clone_ref(py)).collect();
        let past = out.len();
        let mut win: Vec<Contact> = self
            .latest
            .order()
            .into_iter()
            .map(|i| {
                let n = self.latest.node(i);
                Contact { t: n.val, key: n.key.clone(), obj: n.obj.clone_ref(py) }
            })
            .collect();
        // stable, by time alone: sorted(..., key=_first)
        win.sort_by(|a, b| a.t.partial_cmp(&b.t).unwrap_or(std::cmp::Ordering::Equal));
        out.extend(win);
        self.order = out;
        self.keep = 0;
        self.head = past;
    }

    /// `_Pane.past_window`: (distinct items, those items) of the busiest window holding
    /// `ts`; the items only when the count may reach `need`.
    pub fn past_window(&self, ts: f64, window: f64, need: usize) -> (usize, Option<Vec<usize>>) {
        let order = &self.order;
        let n = order.len();
        let lo = bisect_left(order, ts - window, self.keep, n);
        let hi = bisect_right(order, ts + window, lo, n);
        if hi - lo < need {
            return (hi - lo, None);
        }
        let mut counts: HashMap<&str, i64> = HashMap::new();
        let mut best = 0usize;
        let mut best_at = lo;
        let mut r = lo;
        for left in lo..hi {
            let t_left = order[left].t;
            if t_left > ts {
                break;
            }
            let end = t_left + window;
            while r < hi && order[r].t <= end {
                *counts.entry(&order[r].key).or_insert(0) += 1;
                r += 1;
            }
            if counts.len() > best {
                best = counts.len();
                best_at = left;
            }
            let k: &str = &order[left].key;
            let c = counts.get_mut(k).expect("counted");
            *c -= 1;
            if *c == 0 {
                counts.remove(k);
            }
        }
        let t_best = order[best_at].t;
        let mut seen: HashMap<&str, ()> = HashMap::new();
        let mut items = Vec::new();
        for (i, c) in order.iter().enumerate().take(hi).skip(best_at) {
            if c.t <= t_best + window && seen.insert(&c.key, ()).is_none() {
                items.push(i);
            }
        }
        (best, Some(items))
    }
}

fn none_if_neg_inf(py: Python<'_>, v: f64) -> PyResult<Py<PyAny>> {
    if v == f64::NEG_INFINITY {
        Ok(py.None())
    } else {
        Ok(v.into_pyobject(py)?.into_any().unbind())
    }
}

/// `_Episode`, attribute for attribute (containers are the Python lists and sets).
#[pyclass(module = "zeekndm._core")]
pub struct Episode {
    #[pyo3(get, set)]
    pub level: i64,
    #[pyo3(get, set)]
    pub sev: i64,
    #[pyo3(get, set)]
    pub early: bool,
    #[pyo3(get, set)]
    pub threshold: Py<PyAny>,
    #[pyo3(get, set)]
    pub episode_start: f64,
    #[pyo3(get, set)]
    pub last_emit: f64,
    #[pyo3(get, set)]
    pub last_above: f64,
    #[pyo3(get, set)]
    pub seq: i64,
    #[pyo3(get, set)]
    pub ep_attempts: i64,
    #[pyo3(get, set)]
    pub ep_failures: i64,
    #[pyo3(get, set)]
    pub ep_successes: i64,
    #[pyo3(get, set)]
    pub ep_distinct: i64,
    #[pyo3(get, set)]
    pub ep_new: i64,
    #[pyo3(get, set)]
    pub sample: Py<PyAny>,
    #[pyo3(get, set)]
    pub answered: Py<PyAny>,
    #[pyo3(get, set)]
    pub unanswered: Py<PyAny>,
    #[pyo3(get, set)]
    pub uids: Py<PyAny>,
    #[pyo3(get, set)]
    pub cids: Py<PyAny>,
    #[pyo3(get, set)]
    pub ports: Py<PyAny>,
    #[pyo3(get, set)]
    pub transports: Py<PyAny>,
    #[pyo3(get, set)]
    pub silent: bool,
}

const EPISODE_FIELDS: [&str; 21] = [
    "level",
    "sev",
    "early",
    "threshold",
    "episode_start",
    "last_emit",
    "last_above",
    "seq",
    "ep_attempts",
    "ep_failures",
    "ep_successes",
    "ep_distinct",
    "ep_new",
    "sample",
    "answered",
    "unanswered",
    "uids",
    "cids",
    "ports",
    "transports",
    "silent",
];

#[pymethods]
impl Episode {
    #[new]
    pub fn new(py: Python<'_>) -> PyResult<Self> {
        Ok(Episode {
            level: -1,
            sev: -1,
            early: false,
            threshold: 0i64.into_pyobject(py)?.into_any().unbind(),
            episode_start: 0.0,
            last_emit: 0.0,
            last_above: f64::NEG_INFINITY,
            seq: 0,
            ep_attempts: 0,
            ep_failures: 0,
            ep_successes: 0,
            ep_distinct: 0,
            ep_new: 0,
            sample: PyList::empty(py).into_any().unbind(),
            answered: PyList::empty(py).into_any().unbind(),
            unanswered: PyList::empty(py).into_any().unbind(),
            uids: PyList::empty(py).into_any().unbind(),
            cids: PyList::empty(py).into_any().unbind(),
            ports: PySet::empty(py)?.into_any().unbind(),
            transports: PySet::empty(py)?.into_any().unbind(),
            silent: false,
        })
    }

    /// `_Episode.to_dict`: the same keys, in the same order, the same values.
    fn to_dict(slf: &Bound<'_, Self>) -> PyResult<Py<PyDict>> {
        let py = slf.py();
        let out = PyDict::new(py);
        let sorted = py.import("builtins")?.getattr("sorted")?;
        for name in EPISODE_FIELDS {
            let mut value = slf.getattr(name)?;
            if value.is_instance_of::<PySet>() {
                value = sorted.call1((value,))?;
            } else if let Ok(f) = value.extract::<f64>() {
                if f == f64::NEG_INFINITY && value.is_instance_of::<pyo3::types::PyFloat>() {
                    value = py.None().into_bound(py);
                }
            }
            out.set_item(name, value)?;
        }
        Ok(out.unbind())
    }

    #[staticmethod]
    fn from_dict(py: Python<'_>, data: &Bound<'_, PyDict>) -> PyResult<Py<Episode>> {
        let ep = Bound::new(py, Episode::new(py)?)?;
        let set_cls = py.import("builtins")?.getattr("set")?;
        for name in EPISODE_FIELDS {
            if let Some(mut value) = data.get_item(name)? {
                if name == "ports" || name == "transports" {
                    value = set_cls.call1((value,))?;
                } else if value.is_none() && name == "last_above" {
                    value = f64::NEG_INFINITY.into_pyobject(py)?.into_any();
                }
                ep.setattr(name, value)?;
            }
        }
        Ok(ep.unbind())
    }
}

/// `_Track` for an address-valued item.
#[pyclass(module = "zeekndm._core")]
pub struct Track {
    pub items: LinkedMap<Entry>,
    pub win: Pane,
    #[pyo3(get, set)]
    pub last_ts: f64,
    #[pyo3(get, set)]
    pub capped: bool,
    #[pyo3(get, set)]
    pub epoch: i64,
    #[pyo3(get, set)]
    pub n_first: i64,
    #[pyo3(get, set)]
    pub n_failed_first: i64,
    #[pyo3(get, set)]
    pub n_attempts: i64,
    #[pyo3(get, set)]
    pub n_failures: i64,
    #[pyo3(get, set)]
    pub n_answered: i64,
    #[pyo3(get, set)]
    pub sensor: Py<PyAny>,
    #[pyo3(get, set)]
    pub esc_times: Py<PyAny>,
    #[pyo3(get, set)]
    pub last_end: f64,
    #[pyo3(get, set)]
    pub ep: Option<Py<Episode>>,
}

/// The string of an item key (str only: other keys stay on the Python track).
pub fn key_str(obj: &Bound<'_, PyAny>) -> PyResult<Arc<str>> {
    let s = obj.cast::<pyo3::types::PyString>()?;
    Ok(Arc::from(s.to_str()?))
}

#[pymethods]
impl Track {
    #[new]
    pub fn new(py: Python<'_>) -> Self {
        Track {
            items: LinkedMap::new(),
            win: Pane::new(),
            last_ts: f64::NEG_INFINITY,
            capped: false,
            epoch: 0,
            n_first: 0,
            n_failed_first: 0,
            n_attempts: 0,
            n_failures: 0,
            n_answered: 0,
            sensor: py.None(),
            esc_times: py.None(),
            last_end: f64::NEG_INFINITY,
            ep: None,
        }
    }

    /// Items kept (`len(_Track.items)`).
    fn size(&self) -> usize {
        self.items.len()
    }

    /// Items in the window (`len(_Track.win)`).
    fn window_count(&self) -> usize {
        self.win.latest.len()
    }

    fn new_episode(&self, py: Python<'_>) -> PyResult<Episode> {
        Episode::new(py)
    }

    /// `_Track.evidence`: the items an episode's start reports, by first contact.
    fn evidence<'py>(
        &self,
        py: Python<'py>,
        early: bool,
        late: Option<Bound<'py, PyAny>>,
        window: f64,
        ts: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut held: Vec<usize> = Vec::new();
        let order = self.items.order();
        if early {
            for i in order {
                if self.items.node(i).val.epoch == self.epoch {
                    held.push(i);
                }
            }
        } else {
            let mut firsts: Vec<f64> = Vec::new();
            match late {
                None => {
                    for i in self.win.latest.order() {
                        if let Some(j) = self.items.find(&self.win.latest.node(i).key) {
                            firsts.push(self.items.node(j).val.first);
                        }
                    }
                }
                Some(keys) => {
                    for k in keys.try_iter()? {
                        let k = k?;
                        if let Ok(s) = k.cast::<pyo3::types::PyString>() {
                            if let Some(j) = self.items.find(s.to_str()?) {
                                firsts.push(self.items.node(j).val.first);
                            }
                        }
                    }
                }
            }
            let low = firsts.iter().cloned().fold(f64::INFINITY, f64::min);
            let since = (if firsts.is_empty() { ts } else { low }) - window;
            for i in order {
                if self.items.node(i).val.last >= since {
                    held.push(i);
                }
            }
        }
        held.sort_by(|a, b| {
            let (x, y) = (self.items.node(*a).val.first, self.items.node(*b).val.first);
            x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
        });
        let out = PyList::empty(py);
        for i in held {
            out.append(self.items.node(i).val.to_list(py)?)?;
        }
        Ok(out)
    }

    /// The items as an OrderedDict of lists (a copy: for inspection and tests).
    #[getter]
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let od = py.import("collections")?.getattr("OrderedDict")?.call0()?;
        for i in self.items.order() {
            let n = self.items.node(i);
            od.set_item(n.obj.bind(py), n.val.to_list(py)?)?;
        }
        Ok(od)
    }

    /// The window as a copy with `_Pane`'s fields (`latest`, `order`, `head`, `keep`).
    #[getter]
    fn win(&self, py: Python<'_>) -> PyResult<PaneView> {
        let latest = PyDict::new(py);
        for i in self.win.latest.order() {
            let n = self.win.latest.node(i);
            latest.set_item(n.obj.bind(py), n.val)?;
        }
        let order = PyList::empty(py);
        for c in &self.win.order {
            order.append((c.t, c.obj.bind(py)))?;
        }
        Ok(PaneView {
            latest: latest.unbind(),
            order: order.unbind(),
            head: self.win.head,
            keep: self.win.keep,
            past_from: self.win.past_from,
        })
    }

    /// `_Track.to_dict`: the same keys, in the same order, the same values.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let out = PyDict::new(py);
        let items = PyList::empty(py);
        for i in self.items.order() {
            let n = self.items.node(i);
            items.append(PyList::new(py, [n.obj.bind(py).clone(), n.val.to_list(py)?.into_any()])?)?;
        }
        out.set_item("items", items)?;
        let past = PyList::empty(py);
        for c in &self.win.order[self.win.keep..self.win.head] {
            past.append(PyList::new(py, [c.obj.bind(py).clone(), c.t.into_pyobject(py)?.into_any()])?)?;
        }
        out.set_item("past", past)?;
        let win = PyList::empty(py);
        for i in self.win.latest.order() {
            let n = self.win.latest.node(i);
            win.append(PyList::new(py, [n.obj.bind(py).clone(), n.val.into_pyobject(py)?.into_any()])?)?;
        }
        out.set_item("win", win)?;
        out.set_item("last_ts", none_if_neg_inf(py, self.last_ts)?)?;
        out.set_item("capped", self.capped)?;
        out.set_item("epoch", self.epoch)?;
        out.set_item("n_first", self.n_first)?;
        out.set_item("n_failed_first", self.n_failed_first)?;
        out.set_item("n_attempts", self.n_attempts)?;
        out.set_item("n_failures", self.n_failures)?;
        out.set_item("n_answered", self.n_answered)?;
        out.set_item("sensor", self.sensor.bind(py))?;
        out.set_item("esc_times", self.esc_times.bind(py))?;
        out.set_item("last_end", none_if_neg_inf(py, self.last_end)?)?;
        match &self.ep {
            None => out.set_item("ep", py.None())?,
            Some(ep) => out.set_item("ep", Episode::to_dict(ep.bind(py))?)?,
        }
        Ok(out.unbind())
    }

    /// `_Track.from_dict`; ValueError when an item is not an address string.
    #[staticmethod]
    fn from_dict(py: Python<'_>, data: &Bound<'_, PyDict>) -> PyResult<Track> {
        let mut t = Track::new(py);
        if let Some(items) = data.get_item("items")? {
            for pair in items.try_iter()? {
                let pair = pair?;
                let k = pair.get_item(0)?;
                let key = key_str(&k).map_err(|_| PyValueError::new_err("item not a string"))?;
                if t.items.find(&key).is_some() {
                    t.items.remove(&key);
                }
                t.items.push_back(key, k.unbind(), Entry::from_list(&pair.get_item(1)?)?);
            }
        }
        if let Some(past) = data.get_item("past")? {
            if !past.is_none() {
                for pair in past.try_iter()? {
                    let pair = pair?;
                    let k = pair.get_item(0)?;
                    let key = key_str(&k).map_err(|_| PyValueError::new_err("item not a string"))?;
                    t.win.order.push(Contact { t: pair.get_item(1)?.extract()?, key, obj: k.unbind() });
                }
            }
        }
        t.win.head = t.win.order.len();
        if let Some(win) = data.get_item("win")? {
            if !win.is_none() {
                let mut pairs: Vec<(f64, Arc<str>, Py<PyAny>)> = Vec::new();
                for pair in win.try_iter()? {
                    let pair = pair?;
                    let k = pair.get_item(0)?;
                    let key = key_str(&k).map_err(|_| PyValueError::new_err("item not a string"))?;
                    pairs.push((pair.get_item(1)?.extract()?, key, k.unbind()));
                }
                pairs.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
                for (v, key, obj) in pairs {
                    if let Some(i) = t.win.latest.find(&key) {
                        t.win.latest.node_mut(i).val = v;
                    } else {
                        t.win.latest.push_back(key.clone(), obj.clone_ref(py), v);
                    }
                    t.win.order.push(Contact { t: v, key, obj });
                }
            }
        }
        let f = |name: &str, dflt: f64| -> PyResult<f64> {
            match data.get_item(name)? {
                Some(v) if !v.is_none() => v.extract(),
                _ => Ok(dflt),
            }
        };
        let i = |name: &str, dflt: i64| -> PyResult<i64> {
            match data.get_item(name)? {
                Some(v) => v.extract(),
                None => Ok(dflt),
            }
        };
        t.last_ts = f("last_ts", f64::NEG_INFINITY)?;
        t.last_end = f("last_end", f64::NEG_INFINITY)?;
        if let Some(v) = data.get_item("capped")? {
            t.capped = v.is_truthy()?;
        }
        t.epoch = i("epoch", 0)?;
        t.n_first = i("n_first", 0)?;
        t.n_failed_first = i("n_failed_first", 0)?;
        t.n_attempts = i("n_attempts", 0)?;
        t.n_failures = i("n_failures", 0)?;
        t.n_answered = i("n_answered", 0)?;
        if let Some(v) = data.get_item("sensor")? {
            t.sensor = v.unbind();
        }
        if let Some(v) = data.get_item("esc_times")? {
            t.esc_times = v.unbind();
        }
        if let Some(v) = data.get_item("ep")? {
            if !v.is_none() {
                t.ep = Some(Episode::from_dict(py, v.cast::<PyDict>()?)?);
            }
        }
        Ok(t)
    }
}

/// A copy of a native track's window with `_Pane`'s field names.
#[pyclass(module = "zeekndm._core")]
pub struct PaneView {
    #[pyo3(get)]
    latest: Py<PyDict>,
    #[pyo3(get)]
    order: Py<PyList>,
    #[pyo3(get)]
    head: usize,
    #[pyo3(get)]
    keep: usize,
    #[pyo3(get)]
    past_from: f64,
}

#[pymethods]
impl PaneView {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.latest.bind(py).len()
    }
}

/// The items of `Pane::past_window`'s answer as Python objects.
pub fn window_items<'py>(py: Python<'py>, pane: &Pane, at: &[usize]) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for &i in at {
        out.append(pane.order[i].obj.bind(py))?;
    }
    Ok(out)
}

#[allow(dead_code)]
fn _unused(_: &Bound<'_, PyTuple>) {}
