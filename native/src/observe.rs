//! The detector's record dispatch, compiled (`zeekndm._core.Dispatch`).
//!
//! `Dispatch.observe(flow)` is `zeekndm.detect.Detector.observe` step for step: the
//! record and event-time counters, the detector's clock (`max_ts`, the sweep, records
//! later than the allowed lateness), the port tables (exact ports and the wide ranges,
//! cached per port as the Python tables are), the address classification (natively, by
//! the classifier's compiled tables: `crate::classify`), Zeek's local fields, the
//! direction bits, the models' discards and outcomes, and the per-model funnel, then
//! `Counting.update` for every model that counts the record. The port tables and the
//! statistics are native; the statistics are added into the detector's `DetectorStats`
//! when it reads them (`take_counts`). What is rare or Python's own is called back: the
//! sweep, the classifier's `_classify` for a string its compiled tables cannot read, a
//! disagreement with Zeek's local fields, a model's discards.

use crate::count::{Counting, ModelFast};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::classify::{Classifier, FastMap, DROP, INTERNAL, PROXY, SPECIAL, VALID};
use std::sync::Arc;

/// A model as the dispatch sees it: the runtime, its direction bits, its discards and
/// outcomes, and its funnel counters (on_ports, in_direction, discarded, other_outcome,
/// counted).
struct Rt {
    obj: Py<PyAny>,
    dirs: i64,
    any_discards: bool,
    outcomes: Vec<Py<PyAny>>,
    funnel: [AtomicU64; 5],
    /// `runtime.fast` as `set_models` found it (the detector compiles a runtime before
    /// it hands it over, and a reload makes new runtimes)
    fast: Option<Py<ModelFast>>,
}

#[derive(Default)]
struct Table {
    ports: Mutex<FastMap<i64, Arc<[usize]>>>,
    wide: Vec<(i64, i64, usize, HashSet<i64>)>,
}

impl Table {
    /// The models on `port`, as the Python `table.get(port)` / `_models_for` give them
    /// (a port first met in a wide range is cached).
    fn models(&self, port: i64) -> Option<Arc<[usize]>> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = ports.get(&port) {
            return Some(Arc::clone(found));
        }
        if self.wide.is_empty() {
            return None;
        }
        let found: Arc<[usize]> = self
            .wide
            .iter()
            .filter(|(low, high, _, out)| *low <= port && port <= *high && !out.contains(&port))
            .map(|(_, _, rt, _)| *rt)
            .collect();
        ports.insert(port, Arc::clone(&found));
        Some(found)
    }
}

fn bump(c: &AtomicU64) {
    // the GIL orders every caller: a plain load and store, not a locked add
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// One address's flags: the compiled tables when they decide the string, else the
/// classifier's cache and `_classify` (the Python answer).
fn address_flags<'py>(
    py: Python<'py>,
    classifier: &Bound<'py, PyAny>,
    compiled: Option<&Py<Classifier>>,
    addr: &Bound<'py, PyAny>,
) -> PyResult<i64> {
    if let Some(c) = compiled {
        if let Some(flags) = c.get().classify(addr) {
            return Ok(flags);
        }
    }
    let cache_any = classifier.getattr(intern!(py, "_cache"))?;
    let cache = cache_any.cast::<PyDict>()?;
    match cache.get_item(addr)? {
        Some(v) => v.extract::<i64>(),
        None => classifier.call_method1(intern!(py, "_classify"), (addr,))?.extract::<i64>(),
    }
}

/// One detector's compiled dispatch (holds the detector: `detector.observe` is this
/// object's `observe`).
#[pyclass(module = "zeekndm._core")]
pub struct Dispatch {
    det: Py<PyAny>,
    counting: Py<Counting>,
    tcp: Py<PyAny>,
    udp: Py<PyAny>,
    icmp: Py<PyAny>,
    none: Py<PyAny>,
    lateness: f64,
    trust: bool,
    tables: [Table; 4],
    rts: Vec<Rt>,
    // records, matched, outbound, discarded, dropped, late_records
    counts: [AtomicU64; 6],
    // the detector's classifier and its compiled tables (None: it has none, and its
    // own cache and `_classify` answer)
    classifier: Mutex<Option<(Py<PyAny>, Option<Py<Classifier>>)>>,
    // the detector's instance `__dict__`, when the attributes read and set per record
    // (`DICT_ATTRS`) are plain instance attributes (no class attribute, so no property
    // or other descriptor, of those names): a dict lookup then reads exactly what
    // `getattr` would, without the type's lookup first
    attrs: Option<Py<PyDict>>,
}

/// The detector attributes every record reads (and `max_ts` it sets).
const DICT_ATTRS: [&str; 3] = ["max_ts", "_next_sweep", "classifier"];

/// `det.__dict__` when every `DICT_ATTRS` name is an instance attribute only.
fn instance_dict(det: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyDict>>> {
    let cls = det.get_type();
    for name in DICT_ATTRS {
        if cls.getattr_opt(name)?.is_some() {
            return Ok(None);
        }
    }
    Ok(match det.getattr_opt("__dict__")? {
        Some(d) => d.cast_into::<PyDict>().ok().map(|d| d.unbind()),
        None => None,
    })
}

impl Dispatch {
    /// `getattr(det, name)` for a `DICT_ATTRS` name.
    #[inline]
    fn get<'py>(&self, det: &Bound<'py, PyAny>, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(d) = &self.attrs {
            if let Some(v) = d.bind(det.py()).get_item(name)? {
                return Ok(v);
            }
        }
        det.getattr(name) // absent: getattr's own error
    }

    /// `setattr(det, name, value)` for a `DICT_ATTRS` name.
    #[inline]
    fn set<'py>(
        &self,
        det: &Bound<'py, PyAny>,
        name: &Bound<'py, PyString>,
        value: Bound<'py, PyAny>,
    ) -> PyResult<()> {
        match &self.attrs {
            Some(d) => d.bind(det.py()).set_item(name, value),
            None => det.setattr(name, value),
        }
    }

    /// The compiled tables of `classifier` (the detector's), asked of it once per
    /// classifier object (`NetworkClassifier.compiled`); None for an object without them.
    fn compiled(&self, py: Python<'_>, classifier: &Bound<'_, PyAny>) -> PyResult<Option<Py<Classifier>>> {
        {
            let guard = self.classifier.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((c, compiled)) = guard.as_ref() {
                if c.is(classifier) {
                    return Ok(compiled.as_ref().map(|x| x.clone_ref(py)));
                }
            }
        }
        // not under the lock: Python code runs here
        let compiled = match classifier.getattr_opt(intern!(py, "compiled"))? {
            Some(method) => method.call0()?.extract::<Option<Py<Classifier>>>()?,
            None => None,
        };
        let mut guard = self.classifier.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some((classifier.clone().unbind(), compiled.as_ref().map(|x| x.clone_ref(py))));
        Ok(compiled)
    }
}

#[pymethods]
impl Dispatch {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        det: Py<PyAny>,
        counting: Py<Counting>,
        tcp: Py<PyAny>,
        udp: Py<PyAny>,
        icmp: Py<PyAny>,
        none: Py<PyAny>,
        lateness: f64,
        trust: bool,
        py: Python<'_>,
    ) -> PyResult<Self> {
        let attrs = instance_dict(det.bind(py))?;
        Ok(Dispatch {
            det,
            counting,
            tcp,
            udp,
            icmp,
            none,
            lateness,
            trust,
            tables: Default::default(),
            rts: Vec::new(),
            counts: Default::default(),
            classifier: Mutex::new(None),
            attrs,
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.det)?;
        if let Some(d) = &self.attrs {
            visit.call(d)?;
        }
        if let Ok(guard) = self.classifier.try_lock() {
            if let Some((c, _)) = guard.as_ref() {
                visit.call(c)?;
            }
        }
        for rt in &self.rts {
            visit.call(&rt.obj)?;
            if let Some(f) = &rt.fast {
                visit.call(f)?;
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.rts.clear();
        self.attrs = None;
        *self.classifier.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Install the models: `rts` [(runtime, dirs, any_discards, outcomes)], `tables`
    /// per transport (tcp, udp, icmp, other) ({port: [rt index]}, [(low, high, rt
    /// index, [ports out])]). The counters must have been taken first.
    #[allow(clippy::type_complexity)]
    fn set_models(
        &mut self,
        py: Python<'_>,
        rts: Vec<(Py<PyAny>, i64, bool, Vec<Py<PyAny>>)>,
        tables: Vec<(HashMap<i64, Vec<usize>>, Vec<(i64, i64, usize, Vec<i64>)>)>,
    ) -> PyResult<()> {
        if tables.len() != 4 {
            return Err(pyo3::exceptions::PyValueError::new_err("four tables expected"));
        }
        self.rts = rts
            .into_iter()
            .map(|(obj, dirs, any_discards, outcomes)| {
                let fast = obj.bind(py).getattr_opt(intern!(py, "fast"))?;
                let fast = fast.and_then(|f| f.cast::<ModelFast>().ok().map(|f| f.clone().unbind()));
                Ok(Rt { obj, dirs, any_discards, outcomes, funnel: Default::default(), fast })
            })
            .collect::<PyResult<Vec<Rt>>>()?;
        for (i, (ports, wide)) in tables.into_iter().enumerate() {
            self.tables[i] = Table {
                ports: Mutex::new(ports.into_iter().map(|(p, m)| (p, m.into())).collect()),
                wide: wide.into_iter().map(|(lo, hi, rt, out)| (lo, hi, rt, out.into_iter().collect())).collect(),
            };
        }
        Ok(())
    }

    /// The counters since the last call, zeroed: ((records, matched, outbound,
    /// discarded, dropped, late_records), [per model (on_ports, in_direction,
    /// discarded, other_outcome, counted)]).
    #[allow(clippy::type_complexity)]
    fn take_counts(&self) -> ([u64; 6], Vec<[u64; 5]>) {
        let counts = std::array::from_fn(|i| self.counts[i].swap(0, Relaxed));
        let funnels = self.rts.iter().map(|rt| std::array::from_fn(|i| rt.funnel[i].swap(0, Relaxed))).collect();
        (counts, funnels)
    }

    /// `Detector.observe(flow)`: the detections that flow caused (usually none).
    pub(crate) fn observe<'py>(&self, py: Python<'py>, flow: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let rec = Rec::Tuple(flow.cast::<PyTuple>()?.clone());
        self.observe_rec(py, &rec)
    }
}

impl Dispatch {
    /// `observe` on a record of either kind: the one dispatch of both.
    pub(crate) fn observe_rec<'py>(&self, py: Python<'py>, rec: &Rec<'py, '_>) -> PyResult<Py<PyAny>> {
        let det = self.det.bind(py);
        let none = self.none.bind(py);
        let ts = rec.ts()?;
        let tidx = match rec.transport_obj()? {
            None => rec.native_tidx().unwrap_or(3) as usize,
            Some(transport) => {
                if transport.is(self.tcp.bind(py)) {
                    0
                } else if transport.is(self.udp.bind(py)) {
                    1
                } else if transport.is(self.icmp.bind(py)) {
                    2
                } else {
                    3
                }
            }
        };
        let port = rec.port(if tidx == 2 { 2 } else { 4 })?;
        let [records, matched, outbound, discarded, dropped, late] = &self.counts;
        bump(records);
        let table = &self.tables[tidx];
        let mut out: Option<Bound<'py, PyList>> = None;
        let max_ts_name = intern!(py, "max_ts");
        let max_ts = self.get(det, max_ts_name)?.extract::<f64>()?;
        // the clock after this record (the first counting call takes it from here)
        let mut clock = Some(if ts > max_ts { ts } else { max_ts });
        if ts > max_ts {
            self.set(det, max_ts_name, rec.ts_obj(py)?)?;
            let next_sweep = self.get(det, intern!(py, "_next_sweep"))?.extract::<f64>()?;
            if ts >= next_sweep {
                let swept = det.call_method0(intern!(py, "_sweep"))?;
                if swept.is_truthy()? {
                    let list = PyList::empty(py);
                    for d in swept.try_iter()? {
                        list.append(d?)?;
                    }
                    out = Some(list);
                }
            }
        } else if ts < max_ts - self.lateness {
            if table.models(port).is_some_and(|m| !m.is_empty()) {
                bump(late);
            }
            return Ok(none.clone().unbind());
        }
        let done = |out: Option<Bound<'py, PyList>>| -> Py<PyAny> {
            match out {
                Some(list) if !list.is_empty() => list.into_any().unbind(),
                _ => none.clone().unbind(),
            }
        };
        let runtimes = match table.models(port) {
            Some(found) if !found.is_empty() => found,
            _ => return Ok(done(out)),
        };
        bump(matched);
        // direction, once per record: cached address flags, Zeek's local fields
        let classifier = self.get(det, intern!(py, "classifier"))?;
        let compiled = self.compiled(py, &classifier)?;
        let flags = |i: usize| -> PyResult<i64> {
            if let (Some(c), Some(v)) = (compiled.as_ref(), rec.v4(i)) {
                return Ok(c.get().v4_flags(v));
            }
            address_flags(py, &classifier, compiled.as_ref(), &rec.address(py, i)?)
        };
        let fs = flags(1)?;
        let fd = flags(3)?;
        if (fs | fd) & DROP != 0 || fd & SPECIAL != 0 || fd & VALID == 0 {
            if (fs | fd) & DROP != 0 {
                bump(dropped);
            }
            for &i in runtimes.iter() {
                bump(&self.rts[i].funnel[0]);
            }
            return Ok(done(out));
        }
        let mut si = fs & INTERNAL;
        let mut di = fd & INTERNAL;
        if self.trust {
            let differs = |v: Result<Option<bool>, ()>, ours: bool| match v {
                Ok(None) => false,
                Ok(Some(b)) => b != ours,
                Err(()) => true,
            };
            let disagree = differs(rec.local(py, 10)?, si == 1) || differs(rec.local(py, 11)?, di == 1);
            if disagree {
                let got = det.call_method1(intern!(py, "_local"), (rec.flow(py)?, fs, fd, si, di))?;
                (si, di) = got.extract::<(i64, i64)>()?;
            }
        }
        let bit = 1i64 << (si | di << 1);
        let proxy = fs & PROXY != 0;
        let mut in_direction = false;
        let counting = self.counting.get();
        let mut outcome: Option<Bound<'py, PyAny>> = None;
        for &i in runtimes.iter() {
            let rt = &self.rts[i];
            let funnel = &rt.funnel;
            bump(&funnel[0]);
            if rt.dirs & bit == 0 {
                continue;
            }
            bump(&funnel[1]);
            in_direction = true;
            let rt_obj = rt.obj.bind(py);
            if proxy
                || (rt.any_discards
                    && det.call_method1(intern!(py, "_discarded"), (rt_obj, rec.flow(py)?))?.is_truthy()?)
            {
                bump(&funnel[2]);
                bump(discarded);
                continue;
            }
            if !rt.outcomes.is_empty() {
                if outcome.is_none() {
                    outcome = Some(rec.outcome(py)?);
                }
                let o = outcome.as_ref().unwrap();
                if !rt.outcomes.iter().any(|x| o.is(x.bind(py))) {
                    bump(&funnel[3]);
                    continue;
                }
            }
            bump(&funnel[4]);
            // a later model's counting reads the clock itself (Python ran in between)
            let detection = counting.update_rec(py, det, rt_obj, rt.fast.as_ref(), rec, clock.take())?;
            let detection = detection.bind(py);
            if !detection.is_none() {
                let list = match out.take() {
                    Some(list) => list,
                    None => PyList::empty(py),
                };
                for d in detection.try_iter()? {
                    list.append(d?)?;
                }
                out = Some(list);
            }
        }
        if in_direction {
            bump(outbound);
        }
        Ok(done(out))
    }
}

/// A watched TSV record parsed natively (`TsvScanner.scan_observe`): the fields the
/// dispatch and the counting read, as numbers and byte slices of the block. Its
/// addresses are canonical dotted quads (the scanner sends anything else to Python),
/// so `src_v4`/`dst_v4` decide them as their strings would.
pub(crate) struct NativeRec<'a> {
    pub ts: f64,
    pub src: &'a [u8],
    pub src_v4: u32,
    pub sport: u16,
    pub dst: &'a [u8],
    pub dst_v4: u32,
    pub dport: u16,
    /// `TRANSPORTS` index: tcp, udp, icmp, other
    pub tidx: u8,
    /// the outcome's index in the scanner's outcome table (None: unknown)
    pub outcome: Option<usize>,
    /// None for the unset marker
    pub uid: Option<&'a [u8]>,
    pub cid: Option<&'a [u8]>,
    pub sensor: Option<&'a [u8]>,
    pub local_orig: Option<bool>,
    pub local_resp: Option<bool>,
}

/// What makes a native record's Python objects (the scanner's shared strings, ports,
/// enum members and its `Flow` type): only where Python reads the record.
pub(crate) trait FlowMaker {
    fn flow(&self, py: Python<'_>, rec: &NativeRec<'_>) -> PyResult<Py<PyAny>>;
    fn address(&self, py: Python<'_>, raw: &[u8]) -> Py<PyAny>;
    fn outcome(&self, py: Python<'_>, at: Option<usize>) -> Py<PyAny>;
}

fn text_of(v: Option<&[u8]>) -> crate::state::Text {
    match v {
        // ASCII: the scanner sends other lines to Python
        // SAFETY: ASCII (the scanner sends every other line to Python)
        Some(b) => crate::state::Text::new(unsafe { std::str::from_utf8_unchecked(b) }),
        None => crate::state::Text::None,
    }
}

/// A record as the dispatch and the counting read it: a Python `Flow` (live mode,
/// Kafka, JSON, the Python reader) or a native record whose `Flow` is made on first
/// need (a callback that takes it) and then shared by every later need.
pub(crate) enum Rec<'py, 'a> {
    Tuple(Bound<'py, PyTuple>),
    Native { rec: &'a NativeRec<'a>, maker: &'a dyn FlowMaker, flow: std::cell::OnceCell<Bound<'py, PyAny>> },
}

impl<'py, 'a> Rec<'py, 'a> {
    pub fn native(rec: &'a NativeRec<'a>, maker: &'a dyn FlowMaker) -> Self {
        Rec::Native { rec, maker, flow: std::cell::OnceCell::new() }
    }

    /// The record as a Python `Flow`.
    pub fn flow(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Rec::Tuple(t) => Ok(t.clone().into_any()),
            Rec::Native { rec, maker, flow } => {
                if let Some(f) = flow.get() {
                    return Ok(f.clone());
                }
                let f = maker.flow(py, rec)?.into_bound(py);
                Ok(flow.get_or_init(|| f).clone())
            }
        }
    }

    /// A field of the `Flow` that was made, if one was.
    pub fn built(&self, i: usize) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self {
            Rec::Tuple(t) => Ok(Some(t.get_item(i)?)),
            Rec::Native { flow, .. } => match flow.get() {
                Some(f) => Ok(Some(f.cast::<PyTuple>()?.get_item(i)?)),
                None => Ok(None),
            },
        }
    }

    #[inline]
    pub fn ts(&self) -> PyResult<f64> {
        match self {
            Rec::Tuple(t) => t.get_item(0)?.extract::<f64>(),
            Rec::Native { rec, .. } => Ok(rec.ts),
        }
    }

    /// The time as a Python float (the `Flow`'s own when there is one).
    pub fn ts_obj(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.built(0)? {
            Some(o) => Ok(o),
            None => Ok(pyo3::types::PyFloat::new(py, self.ts()?).into_any()),
        }
    }

    /// Field 1 (source) or 3 (destination) as a Python object.
    pub fn address(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        if let Some(o) = self.built(i)? {
            return Ok(o);
        }
        match self {
            Rec::Native { rec, maker, .. } => {
                Ok(maker.address(py, if i == 1 { rec.src } else { rec.dst }).into_bound(py))
            }
            Rec::Tuple(_) => unreachable!(),
        }
    }

    /// The native value of an address (IPv4), without Python.
    #[inline]
    pub fn v4(&self, i: usize) -> Option<u32> {
        match self {
            Rec::Native { rec, .. } => Some(if i == 1 { rec.src_v4 } else { rec.dst_v4 }),
            Rec::Tuple(_) => None,
        }
    }

    /// Field 2 (source port) or 4 (destination port).
    #[inline]
    pub fn port(&self, i: usize) -> PyResult<i64> {
        match self {
            Rec::Tuple(t) => t.get_item(i)?.extract::<i64>(),
            Rec::Native { rec, .. } => Ok(if i == 2 { rec.sport } else { rec.dport } as i64),
        }
    }

    /// The transport object (field 5) of a `Flow`; a native record has its index only.
    pub fn transport_obj(&self) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self {
            Rec::Tuple(t) => Ok(Some(t.get_item(5)?)),
            Rec::Native { .. } => Ok(None),
        }
    }

    #[inline]
    pub fn native_tidx(&self) -> Option<u8> {
        match self {
            Rec::Native { rec, .. } => Some(rec.tidx),
            Rec::Tuple(_) => None,
        }
    }

    /// The outcome member (field 6).
    pub fn outcome(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Rec::Tuple(t) => t.get_item(6),
            Rec::Native { rec, maker, .. } => Ok(maker.outcome(py, rec.outcome).into_bound(py)),
        }
    }

    /// Field 7 (uid) or 8 (community id), as an entry keeps it.
    pub fn text(&self, i: usize) -> PyResult<crate::state::Text> {
        match self {
            Rec::Tuple(t) => Ok(crate::state::Text::Py(t.get_item(i)?.unbind())),
            Rec::Native { rec, .. } => Ok(text_of(if i == 7 { rec.uid } else { rec.cid })),
        }
    }

    /// `bool(flow.sensor)`, and the sensor when true.
    pub fn sensor(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self {
            Rec::Tuple(t) => {
                let s = t.get_item(9)?;
                Ok(if s.is_truthy()? { Some(s) } else { None })
            }
            Rec::Native { rec, .. } => Ok(match rec.sensor {
                Some(b) if !b.is_empty() => {
                    Some(pyo3::types::PyString::new(py, std::str::from_utf8(b).unwrap_or_default()).into_any())
                }
                _ => None,
            }),
        }
    }

    /// Zeek's local fields (10, 11): None, or the flag. A `Flow` field that is neither
    /// None nor a bool is `Err(())` (it disagrees with every classification).
    pub fn local(&self, py: Python<'py>, i: usize) -> PyResult<Result<Option<bool>, ()>> {
        match self {
            Rec::Tuple(t) => {
                let v = t.get_item(i)?;
                if v.is_none() {
                    Ok(Ok(None))
                } else if v.is(PyBool::new(py, true)) {
                    Ok(Ok(Some(true)))
                } else if v.is(PyBool::new(py, false)) {
                    Ok(Ok(Some(false)))
                } else {
                    Ok(Err(()))
                }
            }
            Rec::Native { rec, .. } => Ok(Ok(if i == 10 { rec.local_orig } else { rec.local_resp })),
        }
    }
}
