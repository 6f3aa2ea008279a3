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

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PySet, PyString};
use std::borrow::Borrow;
use std::collections::hash_map;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

const NIL: usize = usize::MAX;

/// FxHash (rustc's): a multiply-rotate hash, much cheaper than SipHash on short keys.
/// The maps it serves are per track and bounded by the track's item cap.
#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

impl Fx {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(FX_K);
    }
}

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxBuild = BuildHasherDefault<Fx>;
pub type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// An item's string (an address): a canonical dotted-quad IPv4 address as its number
/// (no allocation, an integer to hash and compare), anything else shared on the heap.
/// The dotted quad is only taken when it is the one way of writing that number, so two
/// keys are equal exactly when their strings are.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Key {
    V4(u32),
    S(Arc<str>),
}

/// The number of a canonical dotted quad (the scanners' own test, `canonical_ipv4`).
#[inline]
fn parse_v4(s: &str) -> Option<u32> {
    crate::canonical_ipv4(s.as_bytes())
}

impl Key {
    #[inline]
    pub fn new(s: &str) -> Key {
        match parse_v4(s) {
            Some(v) => Key::V4(v),
            None => Key::S(Arc::from(s)),
        }
    }
    /// The string (written out again for an IPv4 address).
    pub fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Key::V4(v) => {
                let mut buf = [0u8; 15];
                let mut n = 0;
                for (k, shift) in [24u32, 16, 8, 0].iter().enumerate() {
                    if k > 0 {
                        buf[n] = b'.';
                        n += 1;
                    }
                    let o = (v >> shift) & 255;
                    if o >= 100 {
                        buf[n] = b'0' + (o / 100) as u8;
                        n += 1;
                    }
                    if o >= 10 {
                        buf[n] = b'0' + (o / 10 % 10) as u8;
                        n += 1;
                    }
                    buf[n] = b'0' + (o % 10) as u8;
                    n += 1;
                }
                // ASCII digits and dots
                f(std::str::from_utf8(&buf[..n]).expect("ascii"))
            }
            Key::S(s) => f(s),
        }
    }
    pub fn to_py<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        self.with_str(|s| PyString::new(py, s))
    }
    pub fn is(&self, s: &str) -> bool {
        match self {
            Key::V4(v) => parse_v4(s) == Some(*v),
            Key::S(k) => &**k == s,
        }
    }
}

/// Ask for the cache line of `p` ahead of its use (a hint: nothing is read, and no
/// address can fault).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only hints the cache; it never faults, whatever the address
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetch the Python object of `T` at `p`, every line of it (its header, then the
/// value, then the borrow flag: the first thing a borrow reads).
#[inline]
pub fn prefetch_object<T>(p: *const pyo3::ffi::PyObject) {
    let p = p as *const u8;
    let size = std::mem::size_of::<pyo3::ffi::PyObject>() + std::mem::size_of::<T>() + 16;
    for at in (0..size).step_by(64) {
        prefetch(p.wrapping_add(at));
    }
}

pub struct Node<K, V> {
    pub key: K,
    pub val: V,
    prev: usize,
    next: usize,
}

/// A map that keeps an order (insertion, or recency with `move_back`), like a dict or
/// an OrderedDict.
pub struct LinkedMap<K, V> {
    index: FxHashMap<K, usize>,
    nodes: Vec<Option<Node<K, V>>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
}

/// A track's items (or its window's latest contacts), keyed by the item's string.
pub type ItemMap<V> = LinkedMap<Key, V>;

impl<K: Hash + Eq + Clone, V> LinkedMap<K, V> {
    pub fn new() -> Self {
        LinkedMap { index: FxHashMap::default(), nodes: Vec::new(), free: Vec::new(), head: NIL, tail: NIL }
    }
    pub fn len(&self) -> usize {
        self.index.len()
    }
    #[inline]
    pub fn find<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
    {
        self.index.get(key).copied()
    }
    pub fn head(&self) -> usize {
        self.head
    }
    /// Prefetch the first and the last node (what eviction, pruning and a push touch).
    #[inline]
    pub fn prefetch_ends(&self) {
        if self.head != NIL {
            prefetch(&self.nodes[self.head]);
        }
        if self.tail != NIL {
            prefetch(&self.nodes[self.tail]);
        }
    }
    pub fn tail(&self) -> usize {
        self.tail
    }
    /// The node after `i` (NIL at the end).
    pub fn next_of(&self, i: usize) -> usize {
        self.node(i).next
    }
    pub fn node(&self, i: usize) -> &Node<K, V> {
        self.nodes[i].as_ref().expect("live node")
    }
    pub fn node_mut(&mut self, i: usize) -> &mut Node<K, V> {
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
    /// The slot `node` is stored in (a freed one first), neither indexed nor linked yet
    /// (over the fields, so a caller may hold an entry of the index meanwhile).
    fn store(nodes: &mut Vec<Option<Node<K, V>>>, free: &mut Vec<usize>, node: Node<K, V>) -> usize {
        match free.pop() {
            Some(i) => {
                nodes[i] = Some(node);
                i
            }
            None => {
                nodes.push(Some(node));
                nodes.len() - 1
            }
        }
    }
    pub fn push_back(&mut self, key: K, val: V) -> usize {
        let node = Node { key: key.clone(), val, prev: NIL, next: NIL };
        let i = Self::store(&mut self.nodes, &mut self.free, node);
        self.index.insert(key, i);
        self.link_back(i);
        i
    }
    /// The node of `key`, or a new one holding `val()` pushed at the back: (its index,
    /// whether it is new), with one hash lookup where `find` then `push_back` take two.
    pub fn find_or_push_back(&mut self, key: &K, val: impl FnOnce() -> V) -> (usize, bool) {
        match self.index.entry(key.clone()) {
            hash_map::Entry::Occupied(o) => (*o.get(), false),
            hash_map::Entry::Vacant(v) => {
                let node = Node { key: key.clone(), val: val(), prev: NIL, next: NIL };
                let i = Self::store(&mut self.nodes, &mut self.free, node);
                v.insert(i);
                self.link_back(i);
                (i, true)
            }
        }
    }
    /// Remove the node of `key` when `pred` holds of its value, with one hash lookup
    /// (`find`, then `take` looks the key up again); whether it was removed.
    pub fn remove_if(&mut self, key: &K, pred: impl FnOnce(&V) -> bool) -> bool {
        let hash_map::Entry::Occupied(o) = self.index.entry(key.clone()) else {
            return false;
        };
        let i = *o.get();
        if !pred(&self.nodes[i].as_ref().expect("live node").val) {
            return false;
        }
        o.remove();
        self.unlink(i);
        self.nodes[i] = None;
        self.free.push(i);
        true
    }
    pub fn move_back(&mut self, i: usize) {
        if self.tail != i {
            self.unlink(i);
            self.link_back(i);
        }
    }
    pub fn move_front(&mut self, i: usize) {
        if self.head != i {
            self.unlink(i);
            let head = self.head;
            {
                let n = self.node_mut(i);
                n.prev = NIL;
                n.next = head;
            }
            if head == NIL {
                self.tail = i;
            } else {
                self.node_mut(head).prev = i;
            }
            self.head = i;
        }
    }
    pub fn take(&mut self, i: usize) -> Node<K, V> {
        self.unlink(i);
        let node = self.nodes[i].take().expect("live node");
        self.index.remove(&node.key);
        self.free.push(i);
        node
    }
    /// `pop_front` then `push_back(key, val)` in the front node's place: the node's
    /// index, and the key and value it held (None when the map was empty).
    pub fn replace_front(&mut self, key: K, val: V) -> (usize, Option<(K, V)>) {
        let i = self.head;
        if i == NIL {
            return (self.push_back(key, val), None);
        }
        self.unlink(i);
        let (old_key, old_val) = {
            let n = self.nodes[i].as_mut().expect("live node");
            (std::mem::replace(&mut n.key, key.clone()), std::mem::replace(&mut n.val, val))
        };
        self.index.remove(&old_key);
        self.index.insert(key, i);
        self.link_back(i);
        (i, Some((old_key, old_val)))
    }
    pub fn clear(&mut self) {
        self.index.clear();
        self.nodes.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
    }
    pub fn pop_front(&mut self) -> Option<Node<K, V>> {
        if self.head == NIL {
            None
        } else {
            Some(self.take(self.head))
        }
    }
    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<Node<K, V>>
    where
        K: Borrow<Q>,
    {
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

/// The transports' names (`Transport._value_`), by index.
pub const TRANSPORTS: [&str; 4] = ["tcp", "udp", "icmp", "other"];

/// The index of a transport's name.
pub fn transport_index(name: &str) -> Option<u8> {
    TRANSPORTS.iter().position(|t| *t == name).map(|i| i as u8)
}

fn transport_str<'py>(py: Python<'py>, i: u8) -> Bound<'py, PyString> {
    PyString::intern(py, TRANSPORTS[i as usize])
}

/// An int that is not a bool (what a port is in `_Track.items`).
fn exact_int(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    if !v.is_exact_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err("not an int"));
    }
    v.extract()
}

/// One item of a track: `_Track.items`' list, field for field; the port and transport
/// are native, the peer address is the item itself (the shapes the compiled counting
/// takes count the address the item is).
pub struct Entry {
    pub first: f64,
    pub last: f64,
    pub attempts: i64,
    pub failures: i64,
    pub answers: i64,
    pub port: i64,
    pub transport: u8,
    pub uid: Text,
    pub cid: Text,
    pub epoch: i64,
}

/// A record's uid or community id as an entry keeps it: text read natively from a
/// line (no Python string made until Python reads it), or the Python object a `Flow`
/// or a snapshot gave.
pub enum Text {
    None,
    /// up to `INLINE_TEXT` bytes in place (a Zeek uid, 18 bytes, fits; a community id,
    /// 30, is boxed): no heap allocation per item, nothing to free when it goes
    Inline(u8, [u8; INLINE_TEXT]),
    S(Box<str>),
    Py(Py<PyAny>),
}

/// The longest text kept in place: 22 bytes keep `Text` at the size of its boxed form
/// (24 bytes), so an entry grows by nothing.
pub const INLINE_TEXT: usize = 22;

impl Text {
    /// Text read from a line.
    #[inline]
    pub fn new(s: &str) -> Text {
        let b = s.as_bytes();
        if b.len() <= INLINE_TEXT {
            let mut buf = [0u8; INLINE_TEXT];
            buf[..b.len()].copy_from_slice(b);
            Text::Inline(b.len() as u8, buf)
        } else {
            Text::S(Box::from(s))
        }
    }

    pub fn to_py<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self {
            Text::None => py.None().into_bound(py),
            // the bytes of a str (`Text::new`): valid UTF-8
            Text::Inline(n, b) => {
                PyString::new(py, std::str::from_utf8(&b[..*n as usize]).unwrap_or_default()).into_any()
            }
            Text::S(s) => PyString::new(py, s).into_any(),
            Text::Py(o) => o.bind(py).clone(),
        }
    }

    /// Python's `bool(value)`.
    pub fn is_truthy(&self, py: Python<'_>) -> PyResult<bool> {
        match self {
            Text::None => Ok(false),
            Text::Inline(n, _) => Ok(*n != 0),
            Text::S(s) => Ok(!s.is_empty()),
            Text::Py(o) => o.bind(py).is_truthy(),
        }
    }
}

// an entry's texts take no more room than a boxed string did
const _: () = assert!(std::mem::size_of::<Text>() == 24);

impl Entry {
    pub fn to_list<'py>(&self, py: Python<'py>, key: &Key) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            [
                self.first.into_pyobject(py)?.into_any(),
                self.last.into_pyobject(py)?.into_any(),
                self.attempts.into_pyobject(py)?.into_any(),
                self.failures.into_pyobject(py)?.into_any(),
                self.answers.into_pyobject(py)?.into_any(),
                self.port.into_pyobject(py)?.into_any(),
                transport_str(py, self.transport).into_any(),
                self.uid.to_py(py),
                self.cid.to_py(py),
                key.to_py(py).into_any(),
                self.epoch.into_pyobject(py)?.into_any(),
            ],
        )
    }

    /// ValueError for what the native entry cannot hold as it is (the Python track
    /// takes such a snapshot).
    fn from_list(v: &Bound<'_, PyAny>, key: &Key) -> PyResult<Entry> {
        let l = v.cast::<PyList>()?;
        if l.len() != 11 {
            return Err(PyValueError::new_err("a track item has 11 fields"));
        }
        let bad = |_| PyValueError::new_err("a track item the native track cannot hold");
        let transport = l.get_item(6)?;
        let transport = transport
            .cast::<PyString>()
            .ok()
            .and_then(|s| transport_index(s.to_str().ok()?))
            .ok_or_else(|| PyValueError::new_err("not a transport name"))?;
        let peer = l.get_item(9)?;
        let same = peer.cast::<PyString>().ok().is_some_and(|p| p.to_str().is_ok_and(|p| key.is(p)));
        if !same {
            return Err(PyValueError::new_err("a peer that is not the item"));
        }
        let float = |i: usize| -> PyResult<f64> {
            let v = l.get_item(i)?;
            if !v.is_exact_instance_of::<pyo3::types::PyFloat>() {
                return Err(PyValueError::new_err("a time that is not a float"));
            }
            v.extract()
        };
        Ok(Entry {
            first: float(0)?,
            last: float(1)?,
            attempts: exact_int(&l.get_item(2)?).map_err(bad)?,
            failures: exact_int(&l.get_item(3)?).map_err(bad)?,
            answers: exact_int(&l.get_item(4)?).map_err(bad)?,
            port: exact_int(&l.get_item(5)?).map_err(bad)?,
            transport,
            uid: Text::Py(l.get_item(7)?.unbind()),
            cid: Text::Py(l.get_item(8)?.unbind()),
            epoch: exact_int(&l.get_item(10)?).map_err(bad)?,
        })
    }
}

/// A contact in the window list: (time, item).
#[derive(Clone)]
pub struct Contact {
    pub t: f64,
    pub key: Key,
}

/// `_Pane`.
pub struct Pane {
    pub latest: ItemMap<f64>,
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

    /// Prefetch what a record's counting touches first: both ends of the latest map and
    /// of the window's contacts.
    #[inline]
    pub fn prefetch(&self) {
        self.latest.prefetch_ends();
        if let Some(c) = self.order.get(self.head) {
            prefetch(c);
        }
        if let Some(c) = self.order.last() {
            prefetch(c);
        }
    }

    pub fn prune(&mut self, horizon: f64, keep_horizon: f64, past_cap: usize) {
        let n = self.order.len();
        let mut head = self.head;
        while head < n {
            let c = &self.order[head];
            if c.t >= horizon {
                break;
            }
            // an item's latest contact leaves with it (a later one keeps the item)
            self.latest.remove_if(&c.key, |&seen| seen == c.t);
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

    pub fn compact(&mut self) {
        let mut out: Vec<Contact> = Vec::with_capacity(self.order.capacity());
        out.extend_from_slice(&self.order[self.keep..self.head]);
        let past = out.len();
        let mut win: Vec<Contact> = self
            .latest
            .order()
            .into_iter()
            .map(|i| {
                let n = self.latest.node(i);
                Contact { t: n.val, key: n.key.clone() }
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
        let mut counts: FxHashMap<&Key, i64> = FxHashMap::default();
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
            let k: &Key = &order[left].key;
            let c = counts.get_mut(k).expect("counted");
            *c -= 1;
            if *c == 0 {
                counts.remove(k);
            }
        }
        let t_best = order[best_at].t;
        let mut seen: FxHashMap<&Key, ()> = FxHashMap::default();
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
    /// the distinct ports (a set; `ports` in Python)
    pub port_set: Vec<i64>,
    /// the transports, a bit per `TRANSPORTS` index (a set of names in Python)
    pub transport_bits: u8,
    #[pyo3(get, set)]
    pub silent: bool,
}

impl Episode {
    /// `ports.add(port)`.
    #[inline]
    pub fn add_port(&mut self, port: i64) {
        if !self.port_set.contains(&port) {
            self.port_set.push(port);
        }
    }
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
            port_set: Vec::new(),
            transport_bits: 0,
            silent: false,
        })
    }

    /// The ports, a set (a copy).
    #[getter]
    fn ports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySet>> {
        PySet::new(py, &self.port_set)
    }

    /// Ints only (TypeError otherwise: such an episode stays a Python one).
    #[setter]
    fn set_ports(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut ports = Vec::new();
        for v in value.try_iter()? {
            let p = exact_int(&v?)?;
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        self.port_set = ports;
        Ok(())
    }

    /// The transports' names, a set (a copy).
    #[getter]
    fn transports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySet>> {
        let out = PySet::empty(py)?;
        for i in 0..TRANSPORTS.len() as u8 {
            if self.transport_bits & (1 << i) != 0 {
                out.add(transport_str(py, i))?;
            }
        }
        Ok(out)
    }

    /// Transport names only (ValueError otherwise).
    #[setter]
    fn set_transports(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut bits = 0u8;
        for v in value.try_iter()? {
            let v = v?;
            let i = v
                .cast::<PyString>()
                .ok()
                .and_then(|s| transport_index(s.to_str().ok()?))
                .ok_or_else(|| PyValueError::new_err("not a transport name"))?;
            bits |= 1 << i;
        }
        self.transport_bits = bits;
        Ok(())
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
    pub items: ItemMap<Entry>,
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

/// The key of an item (str only: other keys stay on the Python track).
pub fn key_of(obj: &Bound<'_, PyAny>) -> PyResult<Key> {
    let s = obj.cast::<PyString>()?;
    Ok(Key::new(s.to_str()?))
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
                            if let Some(j) = self.items.find(&Key::new(s.to_str()?)) {
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
            let n = self.items.node(i);
            out.append(n.val.to_list(py, &n.key)?)?;
        }
        Ok(out)
    }

    /// The items as an OrderedDict of lists (a copy: for inspection and tests).
    #[getter]
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let od = py.import("collections")?.getattr("OrderedDict")?.call0()?;
        for i in self.items.order() {
            let n = self.items.node(i);
            od.set_item(n.key.to_py(py), n.val.to_list(py, &n.key)?)?;
        }
        Ok(od)
    }

    /// The window as a copy with `_Pane`'s fields (`latest`, `order`, `head`, `keep`).
    #[getter]
    fn win(&self, py: Python<'_>) -> PyResult<PaneView> {
        let latest = PyDict::new(py);
        for i in self.win.latest.order() {
            let n = self.win.latest.node(i);
            latest.set_item(n.key.to_py(py), n.val)?;
        }
        let order = PyList::empty(py);
        for c in &self.win.order {
            order.append((c.t, c.key.to_py(py)))?;
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
            items.append(PyList::new(py, [n.key.to_py(py).into_any(), n.val.to_list(py, &n.key)?.into_any()])?)?;
        }
        out.set_item("items", items)?;
        let past = PyList::empty(py);
        for c in &self.win.order[self.win.keep..self.win.head] {
            past.append(PyList::new(py, [c.key.to_py(py).into_any(), c.t.into_pyobject(py)?.into_any()])?)?;
        }
        out.set_item("past", past)?;
        let win = PyList::empty(py);
        for i in self.win.latest.order() {
            let n = self.win.latest.node(i);
            win.append(PyList::new(py, [n.key.to_py(py).into_any(), n.val.into_pyobject(py)?.into_any()])?)?;
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
                let key = key_of(&k).map_err(|_| PyValueError::new_err("item not a string"))?;
                if t.items.find(&key).is_some() {
                    t.items.remove(&key);
                }
                let entry = Entry::from_list(&pair.get_item(1)?, &key)?;
                t.items.push_back(key, entry);
            }
        }
        if let Some(past) = data.get_item("past")? {
            if !past.is_none() {
                for pair in past.try_iter()? {
                    let pair = pair?;
                    let k = pair.get_item(0)?;
                    let key = key_of(&k).map_err(|_| PyValueError::new_err("item not a string"))?;
                    t.win.order.push(Contact { t: pair.get_item(1)?.extract()?, key });
                }
            }
        }
        t.win.head = t.win.order.len();
        if let Some(win) = data.get_item("win")? {
            if !win.is_none() {
                let mut pairs: Vec<(f64, Key)> = Vec::new();
                for pair in win.try_iter()? {
                    let pair = pair?;
                    let k = pair.get_item(0)?;
                    let key = key_of(&k).map_err(|_| PyValueError::new_err("item not a string"))?;
                    pairs.push((pair.get_item(1)?.extract()?, key));
                }
                pairs.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
                for (v, key) in pairs {
                    if let Some(i) = t.win.latest.find(&key) {
                        t.win.latest.node_mut(i).val = v;
                    } else {
                        t.win.latest.push_back(key.clone(), v);
                    }
                    t.win.order.push(Contact { t: v, key });
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
        out.append(pane.order[i].key.to_py(py))?;
    }
    Ok(out)
}

/// A tracked key as the map holds it: a source or destination address, (source,
/// port) for fan-out on one port, (source, destination) for the vertical scans.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum TKey {
    S(Key),
    SI(Key, i64),
    SS(Key, Key),
}

/// A model's name as the track map's keys hold it: shared, with its hash.
#[derive(Clone)]
pub struct ModelName {
    name: Arc<str>,
    hash: u64,
}

impl ModelName {
    pub fn new(name: &str) -> ModelName {
        let mut h = Fx::default();
        name.hash(&mut h);
        ModelName { name: Arc::from(name), hash: h.finish() }
    }
}

impl PartialEq for ModelName {
    #[inline]
    fn eq(&self, other: &ModelName) -> bool {
        // the compiled counting's keys share their model's name
        Arc::ptr_eq(&self.name, &other.name) || self.name == other.name
    }
}

impl Eq for ModelName {}

impl Hash for ModelName {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// (model name, tracked key).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MapKey {
    pub model: ModelName,
    pub t: TKey,
}

/// The native form of a Python track key `(model name, key)`; None for a key no
/// track can have (the map holds no such key).
fn map_key(k: &Bound<'_, PyAny>) -> PyResult<Option<MapKey>> {
    let Ok(t) = k.cast::<pyo3::types::PyTuple>() else {
        return Ok(None);
    };
    if t.len() != 2 {
        return Ok(None);
    }
    let model = t.get_item(0)?;
    let Ok(model) = model.cast::<PyString>() else {
        return Ok(None);
    };
    let model = ModelName::new(model.to_str()?);
    let tk = t.get_item(1)?;
    if let Ok(s) = tk.cast::<PyString>() {
        return Ok(Some(MapKey { model, t: TKey::S(Key::new(s.to_str()?)) }));
    }
    let Ok(pair) = tk.cast::<pyo3::types::PyTuple>() else {
        return Ok(None);
    };
    if pair.len() != 2 {
        return Ok(None);
    }
    let first = pair.get_item(0)?;
    let Ok(first) = first.cast::<PyString>() else {
        return Ok(None);
    };
    let first = Key::new(first.to_str()?);
    let second = pair.get_item(1)?;
    if let Ok(s) = second.cast::<PyString>() {
        return Ok(Some(MapKey { model, t: TKey::SS(first, Key::new(s.to_str()?)) }));
    }
    // an int (True == 1 and hash alike in Python, so a bool is its int here too)
    if second.is_instance_of::<PyInt>() {
        if let Ok(n) = second.extract::<i64>() {
            return Ok(Some(MapKey { model, t: TKey::SI(first, n) }));
        }
    }
    Ok(None)
}

pub struct Slot {
    pub key: Py<PyAny>,
    pub track: Py<PyAny>,
}

/// `Detector._tracks` with the compiled counting: (model name, key) -> track in
/// recency order, the OrderedDict operations the detector uses (get, set, del, pop,
/// move_to_end, popitem, iteration in order, len, keys/values/items, clear), and
/// native lookups for `Counting.update` (no Python key built or hashed per record).
#[pyclass(module = "zeekndm._core")]
pub struct TrackMap {
    pub map: LinkedMap<MapKey, Slot>,
    /// changes when the order or the membership changes (iterators check it)
    pub version: u64,
}

impl TrackMap {
    /// The node of `mk` moved to the recency end (the last one is found first, as a
    /// lone sweeper's every record is).
    #[inline]
    pub fn find_to_back(&mut self, mk: &MapKey) -> Option<usize> {
        let tail = self.map.tail();
        if tail != NIL && self.map.node(tail).key == *mk {
            return Some(tail);
        }
        let i = self.map.find(mk)?;
        self.map.move_back(i);
        self.version += 1;
        Some(i)
    }

    /// Insert a new key at the end (the caller knows it is absent).
    pub fn push(&mut self, mk: MapKey, key: Py<PyAny>, track: Py<PyAny>) {
        self.map.push_back(mk, Slot { key, track });
        self.version += 1;
    }

    fn find_py(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        Ok(match map_key(key)? {
            Some(mk) => self.map.find(&mk),
            None => None,
        })
    }

    fn take_at<'py>(&mut self, py: Python<'py>, i: usize) -> (Bound<'py, PyAny>, Bound<'py, PyAny>) {
        let node = self.map.take(i);
        self.version += 1;
        (node.val.key.into_bound(py), node.val.track.into_bound(py))
    }
}

fn key_error(key: &Bound<'_, PyAny>) -> PyErr {
    pyo3::exceptions::PyKeyError::new_err(key.clone().unbind())
}

#[pymethods]
impl TrackMap {
    #[new]
    pub fn new() -> Self {
        TrackMap { map: LinkedMap::new(), version: 0 }
    }

    fn __len__(&self) -> usize {
        self.map.len()
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.find_py(key)?.is_some())
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match self.find_py(key)? {
            Some(i) => Ok(self.map.node(i).val.track.clone_ref(py)),
            None => Err(key_error(key)),
        }
    }

    /// A new key goes to the end; an existing one keeps its place.
    fn __setitem__(&mut self, key: &Bound<'_, PyAny>, value: Py<PyAny>) -> PyResult<()> {
        let mk = map_key(key)?.ok_or_else(|| PyTypeError::new_err("a track key is (model name, address or pair)"))?;
        match self.map.find(&mk) {
            Some(i) => self.map.node_mut(i).val.track = value,
            None => self.push(mk, key.clone().unbind(), value),
        }
        Ok(())
    }

    fn __delitem__(&mut self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.find_py(key)? {
            Some(i) => {
                self.take_at(py, i);
                Ok(())
            }
            None => Err(key_error(key)),
        }
    }

    #[pyo3(signature = (key, default=None))]
    fn get(&self, py: Python<'_>, key: &Bound<'_, PyAny>, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        Ok(match self.find_py(key)? {
            Some(i) => self.map.node(i).val.track.clone_ref(py),
            None => default.unwrap_or_else(|| py.None()),
        })
    }

    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &mut self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.find_py(key)? {
            Some(i) => Ok(self.take_at(py, i).1),
            None if !default.is_empty() => default.get_item(0),
            None => Err(key_error(key)),
        }
    }

    #[pyo3(signature = (key, last=true))]
    fn move_to_end(&mut self, key: &Bound<'_, PyAny>, last: bool) -> PyResult<()> {
        let i = self.find_py(key)?.ok_or_else(|| key_error(key))?;
        if last {
            self.map.move_back(i);
        } else {
            self.map.move_front(i);
        }
        self.version += 1;
        Ok(())
    }

    #[pyo3(signature = (last=true))]
    fn popitem<'py>(&mut self, py: Python<'py>, last: bool) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let i = if last { self.map.tail() } else { self.map.head() };
        if i == NIL {
            return Err(pyo3::exceptions::PyKeyError::new_err("dictionary is empty"));
        }
        Ok(self.take_at(py, i))
    }

    fn clear(&mut self) {
        self.map.clear();
        self.version += 1;
    }

    fn __iter__(slf: &Bound<'_, Self>) -> TrackMapIter {
        TrackMapIter::of(slf, 0)
    }

    fn keys(slf: &Bound<'_, Self>) -> TrackMapIter {
        TrackMapIter::of(slf, 0)
    }

    fn values(slf: &Bound<'_, Self>) -> TrackMapIter {
        TrackMapIter::of(slf, 1)
    }

    fn items(slf: &Bound<'_, Self>) -> TrackMapIter {
        TrackMapIter::of(slf, 2)
    }
}

/// An iterator over a `TrackMap` in order (keys, values or items); like an
/// OrderedDict's, it fails once the map's order or membership changed.
#[pyclass(module = "zeekndm._core")]
pub struct TrackMapIter {
    map: Py<TrackMap>,
    at: usize,
    version: u64,
    kind: u8,
}

impl TrackMapIter {
    fn of(map: &Bound<'_, TrackMap>, kind: u8) -> TrackMapIter {
        let m = map.borrow();
        TrackMapIter { map: map.clone().unbind(), at: m.map.head(), version: m.version, kind }
    }
}

#[pymethods]
impl TrackMapIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let map = self.map.bind(py).borrow();
        if map.version != self.version {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("the tracks changed during iteration"));
        }
        if self.at == NIL {
            return Ok(None);
        }
        let node = map.map.node(self.at);
        self.at = map.map.next_of(self.at);
        let slot = &node.val;
        Ok(Some(match self.kind {
            0 => slot.key.clone_ref(py),
            1 => slot.track.clone_ref(py),
            _ => (slot.key.clone_ref(py), slot.track.clone_ref(py)).into_pyobject(py)?.into_any().unbind(),
        }))
    }
}
