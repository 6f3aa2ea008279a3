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
//! NUL byte, non-ASCII bytes) is an odd line. Eve `flow` events are parsed by `eve.rs`
//! under the same rule (an exact JSON walk; escapes, ICMP, IPv6 not in its normal form
//! ... are odd lines).

mod classify;
mod count;
mod eve;
mod observe;
mod state;

use memchr::{memchr, memchr_iter, memmem};
use observe::{FlowMaker, NativeRec};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use std::cell::RefCell;
use std::collections::HashMap;

const MIN_TS: f64 = 0.0;
const MAX_TS: f64 = 253402300799.0;
/// IPv6 address strings the eve scanner shares (emptied when full).
const V6_CACHE_MAX: usize = 65_536;

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
pub(crate) fn canonical_ipv4(s: &[u8]) -> Option<u32> {
    // one pass: four parts of 1-3 digits, no leading zero, each up to 255
    if s.len() < 7 || s.len() > 15 {
        return None;
    }
    let (mut value, mut part, mut digits, mut dots) = (0u32, 0u32, 0u32, 0u32);
    for &c in s {
        if c.is_ascii_digit() {
            if digits == 1 && part == 0 {
                return None; // a leading zero
            }
            part = part * 10 + (c - b'0') as u32;
            digits += 1;
            if digits > 3 {
                return None;
            }
        } else if c == b'.' && digits > 0 && part <= 255 && dots < 3 {
            value = value << 8 | part;
            part = 0;
            digits = 0;
            dots += 1;
        } else {
            return None;
        }
    }
    if dots != 3 || digits == 0 || part > 255 {
        return None;
    }
    Some(value << 8 | part)
}

/// Powers of ten a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A time written as plain decimal digits with an optional fraction, within the bounds
/// the readers accept; parsed with correct rounding, as Python's float() does.
fn plain_ts(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s.len() > 40 {
        return None;
    }
    let mut dot = false;
    let mut digits_before = 0;
    let mut digits_after = 0;
    // the digits as one integer (while it fits: `exact`)
    let mut mantissa: u64 = 0;
    let mut exact = true;
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
            match mantissa.checked_mul(10).and_then(|m| m.checked_add((c - b'0') as u64)) {
                Some(m) => mantissa = m,
                None => exact = false,
            }
        } else {
            return None;
        }
    }
    if digits_before == 0 || (dot && digits_after == 0) {
        return None;
    }
    let t: f64 = if exact && mantissa <= 1 << 53 && digits_after < POW10.len() {
        // Clinger's fast path: an integer and a power of ten that are both exact as
        // doubles, so one correctly rounded division gives the correctly rounded value
        mantissa as f64 / POW10[digits_after]
    } else {
        std::str::from_utf8(s).ok()?.parse().ok()?
    };
    if (MIN_TS..=MAX_TS).contains(&t) {
        Some(t)
    } else {
        None
    }
}

/// Address strings shared between records (as the Python reader's cache shares them),
/// in a direct-mapped table keyed by their integer value: an address seen again soon
/// (a scanning source, a busy server) gets the same string, a new one takes its slot.
/// Bounded, with no rehashing or clearing, and a sweep's stream of new destinations
/// costs one slot write each.
struct AddressCache {
    slots: Vec<Option<(u32, Py<PyString>)>>,
}

const ADDR_SLOTS_BITS: u32 = 16;

impl AddressCache {
    fn new() -> Self {
        AddressCache { slots: Vec::new() }
    }

    fn get(&mut self, py: Python<'_>, raw: &[u8]) -> Option<Py<PyAny>> {
        let value = canonical_ipv4(raw)?;
        if self.slots.is_empty() {
            self.slots.resize_with(1 << ADDR_SLOTS_BITS, || None);
        }
        let at =
            ((value as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - ADDR_SLOTS_BITS)) as usize;
        let slot = &mut self.slots[at];
        if let Some((v, s)) = slot {
            if *v == value {
                return Some(s.clone_ref(py).into_any());
            }
        }
        // canonical, so ASCII
        let s = PyString::new(py, unsafe { std::str::from_utf8_unchecked(raw) }).unbind();
        *slot = Some((value, s.clone_ref(py)));
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

/// The int object of a port, made once per port number (ints are immutable: one
/// serves every record).
fn port_object(ports: &mut Vec<Option<Py<PyAny>>>, py: Python<'_>, port: u16) -> Py<PyAny> {
    if ports.is_empty() {
        ports.resize_with(65536, || None);
    }
    let slot = &mut ports[port as usize];
    match slot {
        Some(v) => v.clone_ref(py),
        None => {
            let v = port.into_pyobject(py).unwrap().into_any().unbind();
            *slot = Some(v.clone_ref(py));
            v
        }
    }
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
    /// `tuple.__new__(Flow, values)`: allocated as that does it (the type's allocation,
    /// then the items), without the intermediate tuple and call.
    fn flow(&self, py: Python<'_>, values: [Py<PyAny>; 12]) -> PyResult<Py<PyAny>> {
        let cls = self.flow_cls.bind(py);
        let is_tuple_type = cls
            .cast::<pyo3::types::PyType>()
            .is_ok_and(|t| t.is_subclass_of::<PyTuple>().unwrap_or(false));
        if !is_tuple_type {
            let values = PyTuple::new(py, values)?;
            return self.tuple_new.call1(py, (cls, values));
        }
        // SAFETY: `cls` is a tuple subtype (checked above); its allocation returns a
        // new tuple of 12 empty slots with one reference, which PyTuple_SetItem fills
        // (each call steals its item's reference), as tuple_subtype_new does.
        unsafe {
            let obj =
                pyo3::ffi::PyType_GenericAlloc(cls.as_ptr() as *mut pyo3::ffi::PyTypeObject, 12);
            if obj.is_null() {
                return Err(PyErr::fetch(py));
            }
            for (i, v) in values.into_iter().enumerate() {
                if pyo3::ffi::PyTuple_SetItem(obj, i as pyo3::ffi::Py_ssize_t, v.into_ptr()) != 0 {
                    pyo3::ffi::Py_DecRef(obj);
                    return Err(PyErr::fetch(py));
                }
            }
            Ok(Py::from_owned_ptr(py, obj))
        }
    }

    fn transport_at(&self, py: Python<'_>, tidx: u8) -> Py<PyAny> {
        match tidx {
            0 => self.tcp.clone_ref(py),
            1 => self.udp.clone_ref(py),
            2 => self.icmp.clone_ref(py),
            _ => self.other.clone_ref(py),
        }
    }
}

/// The top bit of each byte of `x` that is zero, and no other bit (exact: the low
/// seven bits of a byte plus 0x7f carry into its top bit, never into the next byte).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !((x & LOW7).wrapping_add(LOW7) | x | LOW7)
}

/// One pass over a line, eight bytes at a time: the separators (`fences[k]`: the index
/// after the k-th one, for k < 63; the count of all of them), whether every byte is
/// ASCII and whether one is NUL. Separators are dense (every few bytes), so each word's
/// are taken from its match mask rather than searched for.
fn fences_of(line: &[u8], sep: u8, fences: &mut [usize; 64]) -> (usize, bool, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let splat = ONES * sep as u64;
    let mut count = 0usize;
    let mut high = 0u64; // every byte's top bit, or-ed together
    let mut zeros = 0u64;
    let mut chunks = line.chunks_exact(8);
    let mut base = 0usize;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        high |= w;
        zeros |= zero_bytes(w);
        let mut m = zero_bytes(w ^ splat);
        while m != 0 {
            // little-endian: the lowest set bit is the first matching byte
            count += 1;
            if count < 63 {
                fences[count] = base + (m.trailing_zeros() / 8) as usize + 1;
            }
            m &= m - 1;
        }
        base += 8;
    }
    for (i, &c) in chunks.remainder().iter().enumerate() {
        high |= c as u64;
        if c == 0 {
            zeros = 1;
        }
        if c == sep {
            count += 1;
            if count < 63 {
                fences[count] = base + i + 1;
            }
        }
    }
    (count, high & (ONES << 7) == 0, zeros != 0)
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
    last_ts: f64,                  // the time of the last record `judge` parsed
    ports: Vec<Option<Py<PyAny>>>, // the port numbers' int objects, made once each
}

/// What `scan_observe` returns: the one item it stopped at (a record or an odd line's
/// offset, as `scan` gives them; None at a header line or the end) with its line index,
/// the lines consumed (the item's included), the lines filtered, where to go on, the
/// records it observed itself, and the event clock's new `high`.
type FusedResult = (Py<PyAny>, usize, usize, usize, usize, usize, f64);

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
            last_ts: 0.0,
            ports: Vec::new(),
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
        Ok((items.unbind(), lines.unbind(), consumed, filtered, stop, PyList::empty(py).unbind()))
    }

    /// `scan`, with the pipeline's `push_many` steps for each record fused in (replay):
    /// the event clock's test (`ts > high`: above `ceiling` the record is handed back
    /// unobserved, for `EventClock._decide`; else `high = ts`), then `dispatch.observe`
    /// (Rust to Rust) and `add_detections` for what it returns. It stops after the
    /// first line Python must read (an odd or too-long line, a record beyond the
    /// ceiling) and before a line that may be a header; see `FusedResult`.
    #[allow(clippy::too_many_arguments)]
    fn scan_observe(
        &mut self,
        py: Python<'_>,
        block: &Bound<'_, PyBytes>,
        start: usize,
        max_line_bytes: usize,
        dispatch: &Bound<'_, observe::Dispatch>,
        mut high: f64,
        ceiling: f64,
        add_detections: &Bound<'_, PyAny>,
    ) -> PyResult<FusedResult> {
        let data = block.as_bytes();
        let dispatch = dispatch.borrow();
        let mut pos = start;
        let mut index = 0usize;
        let mut filtered = 0usize;
        let mut records = 0usize;
        let n = data.len();
        while pos < n {
            let nl = match memchr(b'\n', &data[pos..]) {
                Some(i) => pos + i,
                None => n,
            };
            let raw = &data[pos..nl];
            if raw.len() > max_line_bytes {
                let marker = (-(pos as i64) - 1).into_pyobject(py)?.into_any().unbind();
                return Ok((marker, index, index + 1, filtered, nl + 1, records, high));
            }
            let mut line = raw;
            while let Some((&b'\r', rest)) = line.split_last() {
                line = rest;
            }
            if !line.is_empty() && line[0] <= 35 {
                return Ok((py.None(), index, index, filtered, pos, records, high));
            }
            match self.parse(line) {
                Parsed::Filtered => filtered += 1,
                Parsed::Odd => {
                    let at = pos.into_pyobject(py)?.into_any().unbind();
                    return Ok((at, index, index + 1, filtered, nl + 1, records, high));
                }
                Parsed::Rec(rec) => {
                    let ts = rec.ts;
                    self.last_ts = ts;
                    let maker = Maker {
                        parts: &self.parts,
                        addresses: RefCell::new(&mut self.addresses),
                        ports: RefCell::new(&mut self.ports),
                    };
                    if ts > high {
                        if ts > ceiling {
                            let flow = maker.flow(py, &rec)?;
                            return Ok((flow, index, index + 1, filtered, nl + 1, records, high));
                        }
                        high = ts;
                    }
                    records += 1;
                    let found = dispatch.observe_rec(py, &observe::Rec::native(&rec, &maker))?;
                    let found = found.bind(py);
                    if found.is_truthy()? {
                        add_detections.call1((found,))?;
                    }
                }
            }
            pos = nl + 1;
            index += 1;
        }
        Ok((py.None(), index, index, filtered, n, records, high))
    }
}

impl TsvScanner {
    fn judge(&mut self, py: Python<'_>, line: &[u8]) -> PyResult<Verdict> {
        Ok(match self.parse(line) {
            Parsed::Filtered => Verdict::Filtered,
            Parsed::Odd => Verdict::Odd,
            Parsed::Rec(rec) => {
                self.last_ts = rec.ts;
                let maker = Maker {
                    parts: &self.parts,
                    addresses: RefCell::new(&mut self.addresses),
                    ports: RefCell::new(&mut self.ports),
                };
                Verdict::Flow(maker.flow(py, &rec)?)
            }
        })
    }

    /// One line's verdict, a watched record natively (no Python object made).
    fn parse<'l>(&self, line: &'l [u8]) -> Parsed<'l> {
        if line.is_empty() || line[0] <= 35 {
            return Parsed::Odd;
        }
        let sep = self.sep;
        let ncols = self.ncols;
        // the column boundaries, in one pass (ncols + 1 fences at most)
        let mut fences: [usize; 64] = [0; 64];
        let use_fences = ncols < 63;
        let (count, ascii, nul) = if use_fences {
            fences_of(line, sep, &mut fences)
        } else {
            (memchr_iter(sep, line).count(), line.is_ascii(), memchr(0, line).is_some())
        };
        if let Some(watched) = &self.dports {
            // the prefilter: a line whose responder port is not watched, with the
            // right shape, is only counted
            let d = self.idx[4];
            if d + 1 < ncols && count > d && use_fences {
                let col = &line[fences[d]..fences[d + 1] - 1];
                let on = canonical_port(col).map(|p| watched[p as usize]).unwrap_or(false);
                if !on && count == ncols - 1 && ascii && !nul {
                    return Parsed::Filtered;
                }
            } else if d + 1 < ncols && !use_fences {
                return Parsed::Odd;
            }
        }
        if !ascii || nul || count != ncols - 1 || !use_fences {
            return Parsed::Odd;
        }
        fences[ncols] = line.len() + 1;
        let unset = self.unset.as_slice();
        // a column of the line; None for an absent one (the unset marker)
        let field = |i: usize| -> Option<&'l [u8]> {
            if i >= ncols {
                None
            } else {
                Some(&line[fences[i]..fences[i + 1] - 1])
            }
        };
        let col = |i: usize| -> &[u8] { field(i).unwrap_or(unset) };
        let idx = self.idx;
        let Some(ts) = plain_ts(col(idx[0])) else {
            return Parsed::Odd;
        };
        let (Some(sport), Some(dport)) = (canonical_port(col(idx[2])), canonical_port(col(idx[4])))
        else {
            return Parsed::Odd;
        };
        let (Some(src), Some(dst)) = (field(idx[1]), field(idx[3])) else {
            return Parsed::Odd;
        };
        let Some(src_v4) = canonical_ipv4(src) else {
            return Parsed::Odd;
        };
        let Some(dst_v4) = canonical_ipv4(dst) else {
            return Parsed::Odd;
        };
        let text = |i: usize| -> Option<&'l [u8]> { field(i).filter(|v| *v != unset) };
        let flag = |v: &[u8]| -> Option<bool> {
            match v {
                b"T" => Some(true),
                b"F" => Some(false),
                _ => None,
            }
        };
        let state = col(idx[6]);
        Parsed::Rec(NativeRec {
            ts,
            src,
            src_v4,
            sport,
            dst,
            dst_v4,
            dport,
            tidx: match col(idx[5]) {
                b"tcp" => 0,
                b"udp" => 1,
                b"icmp" => 2,
                _ => 3,
            },
            outcome: self.parts.outcomes.iter().position(|(name, _)| name.as_slice() == state),
            uid: text(idx[7]),
            cid: text(idx[8]),
            sensor: text(idx[9]),
            local_orig: flag(col(idx[10])),
            local_resp: flag(col(idx[11])),
        })
    }
}

/// One line's native verdict.
enum Parsed<'l> {
    Filtered,
    Odd,
    Rec(NativeRec<'l>),
}

/// The scanner's makers of Python objects, for a native record's `Flow` (made only
/// where Python reads the record).
struct Maker<'s> {
    parts: &'s FlowParts,
    addresses: RefCell<&'s mut AddressCache>,
    ports: RefCell<&'s mut Vec<Option<Py<PyAny>>>>,
}

impl FlowMaker for Maker<'_> {
    fn flow(&self, py: Python<'_>, rec: &NativeRec<'_>) -> PyResult<Py<PyAny>> {
        let text = |py: Python<'_>, v: Option<&[u8]>| -> Py<PyAny> {
            match v {
                None => py.None(),
                Some(v) => PyString::new(py, unsafe { std::str::from_utf8_unchecked(v) })
                    .into_any()
                    .unbind(),
            }
        };
        let flag = |py: Python<'_>, v: Option<bool>| -> Py<PyAny> {
            match v {
                Some(b) => b.into_pyobject(py).unwrap().to_owned().into_any().unbind(),
                None => py.None(),
            }
        };
        let (sp, dp) = {
            let mut ports = self.ports.borrow_mut();
            (port_object(&mut ports, py, rec.sport), port_object(&mut ports, py, rec.dport))
        };
        let values: [Py<PyAny>; 12] = [
            rec.ts.into_pyobject(py)?.into_any().unbind(),
            self.address(py, rec.src),
            sp,
            self.address(py, rec.dst),
            dp,
            self.parts.transport_at(py, rec.tidx),
            self.outcome(py, rec.outcome),
            text(py, rec.uid),
            text(py, rec.cid),
            text(py, rec.sensor),
            flag(py, rec.local_orig),
            flag(py, rec.local_resp),
        ];
        self.parts.flow(py, values)
    }

    fn address(&self, py: Python<'_>, raw: &[u8]) -> Py<PyAny> {
        // a native record's addresses are canonical dotted quads
        self.addresses.borrow_mut().get(py, raw).expect("a canonical IPv4 address")
    }

    fn outcome(&self, py: Python<'_>, at: Option<usize>) -> Py<PyAny> {
        match at {
            Some(i) => self.parts.outcomes[i].1.clone_ref(py),
            None => self.parts.unknown.clone_ref(py),
        }
    }
}

/// JSON lines (Suricata eve, Zeek JSON): the prefilter of the Python parsers, exactly;
/// every line that needs parsing is an odd line (the Python parser reads it), except,
/// once `parse_flows` has been called, the eve `flow` events `eve::parse_flow` decides.
#[pyclass(module = "zeekndm._core")]
struct JsonScanner {
    eve: bool,
    key: Vec<u8>,
    dports: Option<Vec<bool>>,
    flows: Option<EveParts>,
    addresses: AddressCache,
    /// IPv6 address strings shared between records, as `addresses` for IPv4
    v6: HashMap<u128, Py<PyString>>,
}

/// Python objects an eve Flow is made of.
struct EveParts {
    tuple_new: Py<PyAny>,
    flow_cls: Py<PyAny>,
    tcp: Py<PyAny>,
    udp: Py<PyAny>,
    /// NO_ANSWER, REJECTED, ESTABLISHED, ABORTED, UNKNOWN
    outcomes: [Py<PyAny>; 5],
}

impl EveParts {
    fn flow(
        &self,
        py: Python<'_>,
        f: &eve::EveFlow<'_>,
        addresses: &mut AddressCache,
        v6: &mut HashMap<u128, Py<PyString>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let mut address = |raw: &[u8]| -> Option<Py<PyAny>> {
            if let Some(s) = addresses.get(py, raw) {
                return Some(s);
            }
            let value = eve::canonical_ipv6(raw)?;
            if let Some(s) = v6.get(&value) {
                return Some(s.clone_ref(py).into_any());
            }
            if v6.len() >= V6_CACHE_MAX {
                v6.clear();
            }
            // canonical, so ASCII
            let s = PyString::new(py, unsafe { std::str::from_utf8_unchecked(raw) }).unbind();
            v6.insert(value, s.clone_ref(py));
            Some(s.into_any())
        };
        let (Some(src), Some(dst)) = (address(f.src), address(f.dst)) else {
            return Ok(None);
        };
        // ASCII (checked by parse_flow)
        let text = |py: Python<'_>, v: Option<&[u8]>| -> Py<PyAny> {
            match v {
                None => py.None(),
                Some(v) => PyString::new(py, unsafe { std::str::from_utf8_unchecked(v) })
                    .into_any()
                    .unbind(),
            }
        };
        let outcome = match f.outcome {
            eve::Outcome::NoAnswer => &self.outcomes[0],
            eve::Outcome::Rejected => &self.outcomes[1],
            eve::Outcome::Established => &self.outcomes[2],
            eve::Outcome::Aborted => &self.outcomes[3],
            eve::Outcome::Unknown => &self.outcomes[4],
        };
        let transport = match f.transport {
            eve::Transport::Tcp => &self.tcp,
            eve::Transport::Udp => &self.udp,
        };
        let values = PyTuple::new(
            py,
            [
                f.t.into_pyobject(py)?.into_any().unbind(),
                src,
                f.sport.into_pyobject(py)?.into_any().unbind(),
                dst,
                f.dport.into_pyobject(py)?.into_any().unbind(),
                transport.clone_ref(py),
                outcome.clone_ref(py),
                text(py, f.flow_id),
                text(py, f.community_id),
                text(py, f.host),
                py.None(),
                py.None(),
            ],
        )?;
        Ok(Some(self.tuple_new.call1(py, (self.flow_cls.clone_ref(py), values))?))
    }
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
            flows: None,
            addresses: AddressCache::new(),
            v6: HashMap::new(),
        }
    }

    /// From now on, parse eve `flow` events into Flows (`tuple_new(flow_cls, values)`),
    /// with `outcomes` NO_ANSWER, REJECTED, ESTABLISHED, ABORTED, UNKNOWN.
    fn parse_flows(
        &mut self,
        tuple_new: Py<PyAny>,
        flow_cls: Py<PyAny>,
        tcp: Py<PyAny>,
        udp: Py<PyAny>,
        outcomes: [Py<PyAny>; 5],
    ) {
        if self.eve {
            self.flows = Some(EveParts { tuple_new, flow_cls, tcp, udp, outcomes });
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
        let flows = self.flows.as_ref();
        let addresses = &mut self.addresses;
        let v6 = &mut self.v6;
        let (items, lines, consumed, filtered, stop) =
            walk(py, data, start, max_line_bytes, false, |py, line| {
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
                if let Some(parts) = flows {
                    let valid = |ip: &[u8]| {
                        canonical_ipv4(ip).is_some() || eve::canonical_ipv6(ip).is_some()
                    };
                    if let Some(f) = eve::parse_flow(line, valid) {
                        if let Some(obj) = parts.flow(py, &f, addresses, v6)? {
                            return Ok(Verdict::Flow(obj));
                        }
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
    let Some(at) = key.find(line) else {
        return false;
    };
    let at = at + key.needle().len();
    let window = &line[at.min(line.len())..line.len().min(at + 8)];
    let Some(end) = memchr(b',', window) else {
        return false;
    };
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
    m.add_class::<classify::Classifier>()?;
    m.add_class::<state::Track>()?;
    m.add_class::<state::Episode>()?;
    m.add_class::<state::PaneView>()?;
    m.add_class::<state::TrackMap>()?;
    m.add_class::<state::TrackMapIter>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
