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

use crate::count::Counting;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};
use pyo3::types::{PyBool, PyDict, PyList, PyTuple};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::collections::{HashMap, HashSet};

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
}

impl Dispatch {
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
    ) -> Self {
        Dispatch {
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
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.det)?;
        if let Ok(guard) = self.classifier.try_lock() {
            if let Some((c, _)) = guard.as_ref() {
                visit.call(c)?;
            }
        }
        for rt in &self.rts {
            visit.call(&rt.obj)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.rts.clear();
        *self.classifier.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Install the models: `rts` [(runtime, dirs, any_discards, outcomes)], `tables`
    /// per transport (tcp, udp, icmp, other) ({port: [rt index]}, [(low, high, rt
    /// index, [ports out])]). The counters must have been taken first.
    #[allow(clippy::type_complexity)]
    fn set_models(
        &mut self,
        rts: Vec<(Py<PyAny>, i64, bool, Vec<Py<PyAny>>)>,
        tables: Vec<(HashMap<i64, Vec<usize>>, Vec<(i64, i64, usize, Vec<i64>)>)>,
    ) -> PyResult<()> {
        if tables.len() != 4 {
            return Err(pyo3::exceptions::PyValueError::new_err("four tables expected"));
        }
        self.rts = rts
            .into_iter()
            .map(|(obj, dirs, any_discards, outcomes)| Rt {
                obj,
                dirs,
                any_discards,
                outcomes,
                funnel: Default::default(),
            })
            .collect();
        for (i, (ports, wide)) in tables.into_iter().enumerate() {
            self.tables[i] = Table {
                ports: Mutex::new(ports.into_iter().map(|(p, m)| (p, m.into())).collect()),
                wide: wide
                    .into_iter()
                    .map(|(lo, hi, rt, out)| (lo, hi, rt, out.into_iter().collect()))
                    .collect(),
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
        let funnels = self
            .rts
            .iter()
            .map(|rt| std::array::from_fn(|i| rt.funnel[i].swap(0, Relaxed)))
            .collect();
        (counts, funnels)
    }

    /// `Detector.observe(flow)`: the detections that flow caused (usually none).
    pub(crate) fn observe<'py>(&self, py: Python<'py>, flow: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let det = self.det.bind(py);
        let none = self.none.bind(py);
        let flow_t = flow.cast::<PyTuple>()?;
        let ts_obj = flow_t.get_item(0)?;
        let ts = ts_obj.extract::<f64>()?;
        let transport = flow_t.get_item(5)?;
        let (tidx, port_at) = if transport.is(self.tcp.bind(py)) {
            (0, 4)
        } else if transport.is(self.udp.bind(py)) {
            (1, 4)
        } else if transport.is(self.icmp.bind(py)) {
            (2, 2)
        } else {
            (3, 4)
        };
        let port = flow_t.get_item(port_at)?.extract::<i64>()?;
        let [records, matched, outbound, discarded, dropped, late] = &self.counts;
        bump(records);
        let table = &self.tables[tidx];
        let mut out: Option<Bound<'py, PyList>> = None;
        let max_ts_name = intern!(py, "max_ts");
        let max_ts = det.getattr(max_ts_name)?.extract::<f64>()?;
        if ts > max_ts {
            det.setattr(max_ts_name, &ts_obj)?;
            let next_sweep = det.getattr(intern!(py, "_next_sweep"))?.extract::<f64>()?;
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
        let classifier = det.getattr(intern!(py, "classifier"))?;
        let compiled = self.compiled(py, &classifier)?;
        let src = flow_t.get_item(1)?;
        let dst = flow_t.get_item(3)?;
        let fs = address_flags(py, &classifier, compiled.as_ref(), &src)?;
        let fd = address_flags(py, &classifier, compiled.as_ref(), &dst)?;
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
            let lo = flow_t.get_item(10)?;
            let lr = flow_t.get_item(11)?;
            let disagree = (!lo.is_none() && !lo.is(PyBool::new(py, si == 1)))
                || (!lr.is_none() && !lr.is(PyBool::new(py, di == 1)));
            if disagree {
                let got = det.call_method1(intern!(py, "_local"), (flow, fs, fd, si, di))?;
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
                    && det.call_method1(intern!(py, "_discarded"), (rt_obj, flow))?.is_truthy()?)
            {
                bump(&funnel[2]);
                bump(discarded);
                continue;
            }
            if !rt.outcomes.is_empty() {
                if outcome.is_none() {
                    outcome = Some(flow_t.get_item(6)?);
                }
                let o = outcome.as_ref().unwrap();
                if !rt.outcomes.iter().any(|x| o.is(x.bind(py))) {
                    bump(&funnel[3]);
                    continue;
                }
            }
            bump(&funnel[4]);
            let detection = counting.update(py, det, rt_obj, flow)?;
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
