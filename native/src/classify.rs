//! The classifier's address flags, compiled (`zeekndm._core.Classifier`).
//!
//! Built from a `zeekndm.networks.NetworkClassifier`'s own tables (its by-octet
//! shortcut and the four prefix tables: internal/external, special, drop, proxies, as
//! (shift, {prefix: value}) longest prefix first), so its answers are the Python
//! lookups' by construction. It decides the strings it can read byte for byte as
//! `_classify` does: a dotted-quad IPv4 address as inet_pton accepts it, and an IPv6
//! address Rust's parser accepts (no scope id); anything else is left to Python.

use pyo3::prelude::*;
use pyo3::types::PyString;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv6Addr;

/// A hasher for integer keys (addresses, ports, prefixes): a keyed splitmix64 finaliser,
/// a few cycles where SipHash takes tens. The key is random per map, so addresses
/// chosen by whoever is scanning cannot be made to collide.
#[derive(Clone, Copy)]
pub struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        FastState(RandomState::new().hash_one(0x5eed_u64) | 1)
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        let mut z = (self.0 ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A HashMap with `FastState`.
pub type FastMap<K, V> = HashMap<K, V, FastState>;

pub const INTERNAL: i64 = 1;
pub const SPECIAL: i64 = 2;
pub const VALID: i64 = 4;
pub const DROP: i64 = 8;
pub const PROXY: i64 = 16;
pub const EXCLUDED: i64 = 32;

type Levels<K> = Vec<(u32, FastMap<K, bool>)>;

fn hit4(levels: &Levels<u32>, value: u32) -> Option<bool> {
    for (shift, nets) in levels {
        let key = value.checked_shr(*shift).unwrap_or(0);
        if let Some(&v) = nets.get(&key) {
            return Some(v);
        }
    }
    None
}

fn hit6(levels: &Levels<u128>, value: u128) -> Option<bool> {
    for (shift, nets) in levels {
        let key = value.checked_shr(*shift).unwrap_or(0);
        if let Some(&v) = nets.get(&key) {
            return Some(v);
        }
    }
    None
}

/// inet_pton(AF_INET)'s dotted quad: four decimal parts, 0-255, no leading zero.
pub fn dotted_quad(s: &[u8]) -> Option<u32> {
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

#[pyclass(module = "zeekndm._core", frozen)]
pub struct Classifier {
    octets: [i64; 256], // -1: no shortcut for that first octet
    v4: [Levels<u32>; 4],
    v6: [Levels<u128>; 4],
}

#[pymethods]
impl Classifier {
    /// `octets` (256 entries, None where there is no shortcut), and per table (verdict,
    /// special, drop, proxies) its IPv4 and IPv6 levels: [(shift, {prefix: value})].
    #[new]
    fn new(
        octets: Vec<Option<i64>>,
        v4: Vec<Vec<(u32, HashMap<u32, bool>)>>,
        v6: Vec<Vec<(u32, HashMap<u128, bool>)>>,
    ) -> PyResult<Self> {
        if octets.len() != 256 || v4.len() != 4 || v6.len() != 4 {
            return Err(pyo3::exceptions::PyValueError::new_err("256 octets, 4 tables expected"));
        }
        let mut o = [-1i64; 256];
        for (i, v) in octets.into_iter().enumerate() {
            o[i] = v.unwrap_or(-1);
        }
        let mut v4 = v4.into_iter().map(|levels| {
            levels.into_iter().map(|(shift, nets)| (shift, nets.into_iter().collect())).collect()
        });
        let mut v6 = v6.into_iter().map(|levels| {
            levels.into_iter().map(|(shift, nets)| (shift, nets.into_iter().collect())).collect()
        });
        Ok(Classifier {
            octets: o,
            v4: std::array::from_fn(|_| v4.next().unwrap()),
            v6: std::array::from_fn(|_| v6.next().unwrap()),
        })
    }

    /// The flags of `addr` as `NetworkClassifier._classify` gives them, or None where
    /// the string is one only Python decides.
    fn flags(&self, addr: &Bound<'_, PyAny>) -> Option<i64> {
        self.classify(addr)
    }
}

impl Classifier {
    pub fn classify(&self, addr: &Bound<'_, PyAny>) -> Option<i64> {
        let s = addr.cast::<PyString>().ok()?;
        let text = s.to_str().ok()?;
        self.classify_str(text.as_bytes())
    }

    pub fn classify_str(&self, b: &[u8]) -> Option<i64> {
        if let Some(v) = dotted_quad(b) {
            return Some(self.v4_flags(v));
        }
        if !b.contains(&b':') || b.contains(&b'%') || !b.is_ascii() {
            return None;
        }
        let ip: Ipv6Addr = std::str::from_utf8(b).ok()?.parse().ok()?;
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Some(self.lookup4(u32::from(v4)));
        }
        Some(self.lookup6(u128::from(ip)))
    }

    /// A dotted-quad address's flags (the by-octet shortcut first, as `_classify`).
    pub fn v4_flags(&self, value: u32) -> i64 {
        let f = self.octets[(value >> 24) as usize];
        if f >= 0 {
            f
        } else {
            self.lookup4(value)
        }
    }

    fn lookup4(&self, value: u32) -> i64 {
        let mut flags = VALID;
        match hit4(&self.v4[0], value) {
            Some(true) => flags |= INTERNAL,
            Some(false) => flags |= EXCLUDED,
            None => {}
        }
        if hit4(&self.v4[1], value) == Some(true) {
            flags |= SPECIAL;
        }
        if hit4(&self.v4[2], value) == Some(true) {
            flags |= DROP;
        }
        if hit4(&self.v4[3], value) == Some(true) {
            flags |= PROXY;
        }
        flags
    }

    fn lookup6(&self, value: u128) -> i64 {
        let mut flags = VALID;
        match hit6(&self.v6[0], value) {
            Some(true) => flags |= INTERNAL,
            Some(false) => flags |= EXCLUDED,
            None => {}
        }
        if hit6(&self.v6[1], value) == Some(true) {
            flags |= SPECIAL;
        }
        if hit6(&self.v6[2], value) == Some(true) {
            flags |= DROP;
        }
        if hit6(&self.v6[3], value) == Some(true) {
            flags |= PROXY;
        }
        flags
    }
}
