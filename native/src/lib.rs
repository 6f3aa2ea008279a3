//! zeekndm's compiled fast path (`zeekndm._core`).
//!
//! A scanner takes a block of whole lines and does, in one pass over the bytes, what
//! the Python readers do line by line: find the lines on watched ports (the prefilter),
//! count the others as filtered (or, for eve, as skipped per event type), and parse the
//! watched lines into `Flow` tuples. Whatever it cannot decide with certainty it hands
//! back as an "odd" line, which the Python parser then reads exactly as it always did;
//! so the records, the bad lines and their line numbers are the same on both paths,
//! and only the ordinary, well-formed lines take the fast route.
//!
//! The fast route accepts only what it can decide byte for byte like the Python
//! parser: ASCII lines, canonical ports ("80", never "080"), canonical dotted-quad IPv4
//! addresses (which are their own normal form), plain decimal times. Anything else
//! (IPv6, a port with a leading zero, a time in exponent form, a wrong column count, a
//! NUL byte, non-ASCII bytes) is an odd line.

mod count;
mod observe;
mod state;

use memchr::{memchr, memchr_iter, memmem};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use std::collections::HashMap;

const MIN_TS: f64 = 0.0;
const MAX_TS: f64 = 253402300799.0;
const ADDR_CACHE_MAX: usize = 200_000;

/// One line's verdict.
enum Verdict {
    Filtered,
    Odd,
    Flow(Py<PyAny>),
}

/// A canonical port: decimal digits, no leading zero (except "0"), at most 65535.
fn canonical_port(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    let mut v: u32 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    if v > 65535 {
        None
    } else {
        Some(v as u16)
    }
}

/// A canonical dotted-quad IPv4 address (what inet_ntop would write back) as an integer.
fn canonical_ipv4(s: &[u8]) -> Option<u32> {
    if s.len() < 7 || s.len() > 15 {
        return None;
    }
    let mut value: u32 = 0;
    let mut parts = 0;
    for part in s.split(|&c| c == b'.') {
        parts += 1;
        if parts > 4 || part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut v: u32 = 0;
        for &c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        if v > 255 {
            return None;
        }
        value = value << 8 | v;
    }
    if parts == 4 {
        Some(value)
    } else {
        None
    }
}

/// A time written as plain decimal digits with an optional fraction, within the bounds
/// the readers accept; parsed with correct rounding, as Python's float() does.
fn plain_ts(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s.len() > 40 {
        return None;
    }
    let mut dot = false;
    let mut digits_before = 0;
    let mut digits_after = 0;
    for &c in s {
        if c == b'.' {
            if dot {
                return None;
            }
            dot = true;
        } else if c.is_ascii_digit() {
            if dot {
                digits_after += 1;
            } else {
                digits_before += 1;
            }
        } else {
            return None;
        }
    }
    if digits_before == 0 || (dot && digits_after == 0) {
        return None;
    }
    let t: f64 = std::str::from_utf8(s).ok()?.parse().ok()?;
    if (MIN_TS..=MAX_TS).contains(&t) {
        Some(t)
    } else {
        None
    }
}

/// Address strings shared between records (as the Python reader's cache shares them),
/// keyed by their integer value.
struct AddressCache {
    known: HashMap<u32, Py<PyString>>,
}

impl AddressCache {
    fn new() -> Self {
        AddressCache { known: HashMap::new() }
    }

    fn get(&mut self, py: Python<'_>, raw: &[u8]) -> Option<Py<PyAny>> {
        let value = canonical_ipv4(raw)?;
        if let Some(s) = self.known.get(&value) {
            return Some(s.clone_ref(py).into_any());
        }
        if self.known.len() >= ADDR_CACHE_MAX {
            self.known.clear();
        }
        // canonical, so ASCII
        let s = PyString::new(py, unsafe { std::str::from_utf8_unchecked(raw) }).unbind();
        self.known.insert(value, s.clone_ref(py));
        Some(s.into_any())
    }
}

/// What every scanner returns for a block: records and odd lines in file order, the
/// line index of each, the lines consumed, the lines filtered, where it stopped (a
/// header line, or the end) and, for eve, the skipped event types with their counts.
type ScanResult = (Py<PyList>, Py<PyList>, usize, usize, usize, Py<PyList>);

/// The shared block walk: calls `judge` on each line (without its newline and trailing
/// CRs) from `start` on; `stop_at_header` ends the walk at a Zeek header line.
#[allow(clippy::too_many_arguments)]
fn walk<'py, F>(
    py: Python<'py>,
    block: &[u8],
    start: usize,
    max_line_bytes: usize,
    stop_at_header: bool,
    mut judge: F,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, usize, usize, usize)>
where
    F: FnMut(Python<'py>, &[u8]) -> PyResult<Verdict>,
{
    let items = PyList::empty(py);
    let lines = PyList::empty(py);
    let mut pos = start;
    let mut index = 0usize;
    let mut filtered = 0usize;
    let n = block.len();
    while pos < n {
        let nl = match memchr(b'\n', &block[pos..]) {
            Some(i) => pos + i,
            None => n,
        };
        let raw = &block[pos..nl];
        if raw.len() > max_line_bytes {
            // the Python reader's "line too long": a negative marker, -(offset + 1)
            items.append(-(pos as i64) - 1)?;
            lines.append(index)?;
        } else {
            let mut line = raw;
            while let Some((&b'\r', rest)) = line.split_last() {
                line = rest;
            }
            // a line starting below '$' may be a header (perhaps after blanks): the
            // Python parser reads it, since it may change the header state
            if stop_at_header && !line.is_empty() && line[0] <= 35 {
                return Ok((items, lines, index, filtered, pos));
            }
            match judge(py, line)? {
                Verdict::Filtered => filtered += 1,
                Verdict::Odd => {
                    items.append(pos)?;
                    lines.append(index)?;
                }
                Verdict::Flow(obj) => {
                    items.append(obj)?;
                    lines.append(index)?;
                }
            }
        }
        pos = nl + 1;
        index += 1;
    }
    Ok((items, lines, index, filtered, n))
}

/// Python objects a Flow is made of.
struct FlowParts {
    tuple_new: Py<PyAny>,
    flow_cls: Py<PyAny>,
    tcp: Py<PyAny>,
    udp: Py<PyAny>,
    icmp: Py<PyAny>,
    other: Py<PyAny>,
    outcomes: Vec<(Vec<u8>, Py<PyAny>)>,
    unknown: Py<PyAny>,
}

impl FlowParts {
    fn outcome(&self, py: Python<'_>, state: &[u8]) -> Py<PyAny> {
        for (name, value) in &self.outcomes {
            if name.as_slice() == state {
                return value.clone_ref(py);
            }
        }
        self.unknown.clone_ref(py)
    }

    fn transport(&self, py: Python<'_>, proto: &[u8]) -> Py<PyAny> {
        match proto {
            b"tcp" => self.tcp.clone_ref(py),
            b"udp" => self.udp.clone_ref(py),
            b"icmp" => self.icmp.clone_ref(py),
            _ => self.other.clone_ref(py),
        }
    }
}

/// Zeek TSV data lines of one header block.
#[pyclass(module = "zeekndm._core")]
struct TsvScanner {
    parts: FlowParts,
    addresses: AddressCache,
    sep: u8,
    ncols: usize,
    idx: [usize; 12],
    unset: Vec<u8>,
    dports: Option<Vec<bool>>,
}

#[pymethods]
impl TsvScanner {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        tuple_new: Py<PyAny>,
        flow_cls: Py<PyAny>,
        tcp: Py<PyAny>,
        udp: Py<PyAny>,
        icmp: Py<PyAny>,
        other: Py<PyAny>,
        outcomes: Vec<(Vec<u8>, Py<PyAny>)>,
        unknown: Py<PyAny>,
    ) -> Self {
        TsvScanner {
            parts: FlowParts { tuple_new, flow_cls, tcp, udp, icmp, other, outcomes, unknown },
            addresses: AddressCache::new(),
            sep: b'\t',
            ncols: 0,
            idx: [0; 12],
            unset: b"-".to_vec(),
            dports: None,
        }
    }

    /// The current header block: separator (one byte), column count, the index of each
    /// logical column (`ncols` for an absent one), the unset marker, watched ports.
    fn configure(
        &mut self,
        sep: u8,
        ncols: usize,
        idx: [usize; 12],
        unset: Vec<u8>,
        dports: Option<Vec<u16>>,
    ) {
        self.sep = sep;
        self.ncols = ncols;
        self.idx = idx;
        self.unset = unset;
        self.dports = dports.map(|ports| {
            let mut table = vec![false; 65536];
            for p in ports {
                table[p as usize] = true;
            }
            table
        });
    }

    /// Scan `block` (whole lines) from byte `start`; see `ScanResult`.
    fn scan(
        &mut self,
        py: Python<'_>,
        block: &Bound<'_, PyBytes>,
        start: usize,
        max_line_bytes: usize,
    ) -> PyResult<ScanResult> {
        let data = block.as_bytes();
        let (items, lines, consumed, filtered, stop) =
            walk(py, data, start, max_line_bytes, true, |py, line| self.judge(py, line))?;
        Ok((
            items.unbind(),
            lines.unbind(),
            consumed,
            filtered,
            stop,
            PyList::empty(py).unbind(),
        ))
    }
}

impl TsvScanner {
    fn judge(&mut self, py: Python<'_>, line: &[u8]) -> PyResult<Verdict> {
        if line.is_empty() || line[0] <= 35 {
            return Ok(Verdict::Odd);
        }
        let sep = self.sep;
        let ncols = self.ncols;
        // the column boundaries, in one pass (ncols + 1 fences at most)
        let mut fences: [usize; 64] = [0; 64];
        let use_fences = ncols < 63;
        let mut count = 0usize;
        if use_fences {
            // separators are dense (every few bytes): a plain loop beats a SIMD search
            for (i, &c) in line.iter().enumerate() {
                if c == sep {
                    count += 1;
                    if count < 63 {
                        fences[count] = i + 1;
                    }
                }
            }
        } else {
            count = memchr_iter(sep, line).count();
        }
        let ascii = line.is_ascii();
        let nul = memchr(0, line).is_some();
        if let Some(watched) = &self.dports {
            // the prefilter: a line whose responder port is not watched, with the
            // right shape, is only counted
            let d = self.idx[4];
            if d + 1 < ncols && count > d && use_fences {
                let col = &line[fences[d]..fences[d + 1] - 1];
                let on = canonical_port(col).map(|p| watched[p as usize]).unwrap_or(false);
                if !on && count == ncols - 1 && ascii && !nul {
                    return Ok(Verdict::Filtered);
                }
            } else if d + 1 < ncols && !use_fences {
                return Ok(Verdict::Odd);
            }
        }
        if !ascii || nul || count != ncols - 1 || !use_fences {
            return Ok(Verdict::Odd);
        }
        fences[ncols] = line.len() + 1;
        let unset = self.unset.as_slice();
        let col = |i: usize| -> &[u8] {
            if i >= ncols {
                unset
            } else {
                &line[fences[i]..fences[i + 1] - 1]
            }
        };
        let idx = self.idx;
        let Some(t) = plain_ts(col(idx[0])) else { return Ok(Verdict::Odd) };
        let (Some(sp), Some(dp)) = (canonical_port(col(idx[2])), canonical_port(col(idx[4])))
        else {
            return Ok(Verdict::Odd);
        };
        let Some(src) = self.addresses.get(py, col(idx[1])) else { return Ok(Verdict::Odd) };
        let Some(dst) = self.addresses.get(py, col(idx[3])) else { return Ok(Verdict::Odd) };
        let text = |py: Python<'_>, v: &[u8]| -> Py<PyAny> {
            if v == unset {
                py.None()
            } else {
                PyString::new(py, unsafe { std::str::from_utf8_unchecked(v) }).into_any().unbind()
            }
        };
        let flag = |py: Python<'_>, v: &[u8]| -> Py<PyAny> {
            match v {
                b"T" => true.into_pyobject(py).unwrap().to_owned().into_any().unbind(),
                b"F" => false.into_pyobject(py).unwrap().to_owned().into_any().unbind(),
                _ => py.None(),
            }
        };
        let values = PyTuple::new(
            py,
            [
                t.into_pyobject(py)?.into_any().unbind(),
                src,
                sp.into_pyobject(py)?.into_any().unbind(),
                dst,
                dp.into_pyobject(py)?.into_any().unbind(),
                self.parts.transport(py, col(idx[5])),
                self.parts.outcome(py, col(idx[6])),
                text(py, col(idx[7])),
                text(py, col(idx[8])),
                text(py, col(idx[9])),
                flag(py, col(idx[10])),
                flag(py, col(idx[11])),
            ],
        )?;
        let flow = self.parts.tuple_new.call1(py, (self.parts.flow_cls.clone_ref(py), values))?;
        Ok(Verdict::Flow(flow))
    }
}

/// JSON lines (Suricata eve, Zeek JSON): the prefilter of the Python parsers, exactly;
/// every line that needs parsing is an odd line (the Python parser reads it).
#[pyclass(module = "zeekndm._core")]
struct JsonScanner {
    eve: bool,
    key: Vec<u8>,
    dports: Option<Vec<bool>>,
}

const EVENT_TYPE_KEY: &[u8] = b"\"event_type\":\"";

#[pymethods]
impl JsonScanner {
    /// `eve`: Suricata (non-flow events are skipped by type); `key`: the compact
    /// destination-port key (`"dest_port":`); `dports`: watched ports, None for all.
    #[new]
    fn new(eve: bool, key: Vec<u8>, dports: Option<Vec<u16>>) -> Self {
        JsonScanner {
            eve,
            key,
            dports: dports.map(|ports| {
                let mut table = vec![false; 65536];
                for p in ports {
                    table[p as usize] = true;
                }
                table
            }),
        }
    }

    fn scan(
        &mut self,
        py: Python<'_>,
        block: &Bound<'_, PyBytes>,
        start: usize,
        max_line_bytes: usize,
    ) -> PyResult<ScanResult> {
        let data = block.as_bytes();
        let mut types: Vec<(Vec<u8>, usize)> = Vec::new();
        let mut where_: HashMap<Vec<u8>, usize> = HashMap::new();
        let key_finder = memmem::Finder::new(&self.key).into_owned();
        let event_finder = memmem::Finder::new(EVENT_TYPE_KEY);
        let eve = self.eve;
        let dports = self.dports.as_deref();
        let (items, lines, consumed, filtered, stop) =
            walk(py, data, start, max_line_bytes, false, |_py, line| {
                if line.is_empty() {
                    return Ok(Verdict::Odd);
                }
                if eve {
                    let head = &line[..line.len().min(400)];
                    if let Some(at) = event_finder.find(head) {
                        let at = at + EVENT_TYPE_KEY.len();
                        let rest = &line[at..];
                        if !(rest.starts_with(b"flow\"") || rest.starts_with(b"netflow\"")) {
                            let window = &line[at..line.len().min(at + 40)];
                            if let Some(end) = memchr(b'"', window) {
                                if end > 0 {
                                    let t = &window[..end];
                                    match where_.get(t) {
                                        Some(&i) => types[i].1 += 1,
                                        None => {
                                            where_.insert(t.to_vec(), types.len());
                                            types.push((t.to_vec(), 1));
                                        }
                                    }
                                    return Ok(Verdict::Filtered);
                                }
                            }
                        }
                    }
                }
                if let Some(watched) = dports {
                    if filtered_out(line, &key_finder, watched) {
                        return Ok(Verdict::Filtered);
                    }
                }
                Ok(Verdict::Odd)
            })?;
        // the skipped lines were counted as filtered above: take them back out
        let skipped: usize = types.iter().map(|(_, n)| n).sum();
        let out = PyList::empty(py);
        for (t, n) in types {
            out.append((PyBytes::new(py, &t), n))?;
        }
        Ok((items.unbind(), lines.unbind(), consumed, filtered - skipped, stop, out.unbind()))
    }
}

/// `JSONPortFilter._filtered_out`, byte for byte.
fn filtered_out(line: &[u8], key: &memmem::Finder<'_>, watched: &[bool]) -> bool {
    let Some(at) = key.find(line) else { return false };
    let at = at + key.needle().len();
    let window = &line[at.min(line.len())..line.len().min(at + 8)];
    let Some(end) = memchr(b',', window) else { return false };
    if end == 0 {
        return false;
    }
    let value = &window[..end];
    if !value.iter().all(|c| c.is_ascii_digit()) {
        return false;
    }
    if canonical_port(value).map(|p| watched[p as usize]).unwrap_or(false) {
        return false;
    }
    if key.find(&line[at + end..]).is_some() {
        return false;
    }
    if line.last() != Some(&b'}') || memchr(0, line).is_some() {
        return false;
    }
    true
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TsvScanner>()?;
    m.add_class::<JsonScanner>()?;
    m.add_class::<count::ModelFast>()?;
    m.add_class::<count::Counting>()?;
    m.add_class::<observe::Dispatch>()?;
    m.add_class::<state::Track>()?;
    m.add_class::<state::Episode>()?;
    m.add_class::<state::PaneView>()?;
    m.add_class::<state::TrackMap>()?;
    m.add_class::<state::TrackMapIter>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
