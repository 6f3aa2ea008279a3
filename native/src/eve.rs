//! Suricata eve `flow` events parsed natively into `Flow` tuples: the same values the
//! Python parser's fast path (`SuricataEveParser.parse_scanned`) returns, for the lines
//! where that fast path succeeds and every decision can be made byte for byte. Anything
//! else returns None and the line is handed back to Python ("odd"): non-ASCII bytes, any
//! backslash (string escapes), a duplicated key we read, an address not in its normal
//! form (a dotted quad with a leading zero, IPv6 in capitals or uncompressed, IPv4-mapped,
//! a zone id), ICMP and other transports, `netflow` events, an unusual timestamp or value type.
//!
//! The whole line is validated as JSON (the grammar orjson accepts, minus what we
//! refuse), since orjson would refuse an invalid line that the fields alone do not show.

/// A JSON value's kind and where its text is (strings without their quotes).
#[derive(Clone, Copy)]
pub enum Tok {
    Str(usize, usize),
    Int(usize, usize),
    Float,
    True,
    False,
    Null,
    Arr,
    Obj(usize, usize),
}

const MAX_DEPTH: usize = 64;

pub struct Walker<'a> {
    pub s: &'a [u8],
    pub i: usize,
}

impl<'a> Walker<'a> {
    #[inline]
    fn ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i] == b' ' || self.s[self.i] == b'\t') {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// A string (the line is ASCII without backslashes): its text span.
    #[inline]
    fn string(&mut self) -> Option<(usize, usize)> {
        // at the opening quote
        let start = self.i + 1;
        let mut j = start;
        let s = self.s;
        while j < s.len() {
            let c = s[j];
            if c == b'"' {
                self.i = j + 1;
                return Some((start, j));
            }
            if c < 0x20 {
                return None;
            }
            j += 1;
        }
        None
    }

    /// A number in JSON's grammar: an integer of at most 19 digits is an Int (orjson
    /// reads it as an int), anything else a Float that must be finite.
    fn number(&mut self) -> Option<Tok> {
        let s = self.s;
        let start = self.i;
        let mut j = start;
        if s.get(j) == Some(&b'-') {
            j += 1;
        }
        let digits_at = j;
        match s.get(j) {
            Some(b'0') => j += 1,
            Some(c) if c.is_ascii_digit() => {
                while j < s.len() && s[j].is_ascii_digit() {
                    j += 1;
                }
            }
            _ => return None,
        }
        let int_digits = j - digits_at;
        let mut float = false;
        if s.get(j) == Some(&b'.') {
            float = true;
            j += 1;
            let at = j;
            while j < s.len() && s[j].is_ascii_digit() {
                j += 1;
            }
            if j == at {
                return None;
            }
        }
        if matches!(s.get(j), Some(b'e') | Some(b'E')) {
            float = true;
            j += 1;
            if matches!(s.get(j), Some(b'+') | Some(b'-')) {
                j += 1;
            }
            let at = j;
            while j < s.len() && s[j].is_ascii_digit() {
                j += 1;
            }
            if j == at {
                return None;
            }
        }
        self.i = j;
        // orjson reads an integer as an int within 64 bits: always so for 18 digits, and
        // for 19 without a sign
        if !float && (int_digits <= 18 || (int_digits == 19 && s[start] != b'-')) {
            return Some(Tok::Int(start, j));
        }
        // ASCII digits, signs, dot, e: valid UTF-8
        let text = unsafe { std::str::from_utf8_unchecked(&s[start..j]) };
        let v: f64 = text.parse().ok()?;
        if v.is_finite() {
            Some(Tok::Float)
        } else {
            None
        }
    }

    fn literal(&mut self, word: &[u8], tok: Tok) -> Option<Tok> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Some(tok)
        } else {
            None
        }
    }

    /// Any value; objects and arrays are walked (validated) through.
    pub fn value(&mut self, depth: usize) -> Option<Tok> {
        match self.peek()? {
            b'"' => {
                let (a, b) = self.string()?;
                Some(Tok::Str(a, b))
            }
            b'{' => {
                let start = self.i;
                self.object(depth + 1, |_, _, _| Some(()))?;
                Some(Tok::Obj(start, self.i))
            }
            b'[' => {
                if depth + 1 > MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(Tok::Arr);
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(Tok::Arr);
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true", Tok::True),
            b'f' => self.literal(b"false", Tok::False),
            b'n' => self.literal(b"null", Tok::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object from its `{`: `member(key, value, walker)` is called for each member.
    pub fn object<F>(&mut self, depth: usize, mut member: F) -> Option<()>
    where
        F: FnMut(&[u8], Tok, &[u8]) -> Option<()>,
    {
        if depth > MAX_DEPTH || self.peek()? != b'{' {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let (ka, kb) = self.string()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth)?;
            member(&self.s[ka..kb], v, self.s)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Put `v` in `slot` unless the key was seen before (orjson keeps the last of
/// duplicated keys: we hand such a line back instead).
#[inline]
fn set(slot: &mut Option<Tok>, v: Tok) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(())
}

/// The members of one object that we read.
fn members<const N: usize>(
    s: &[u8],
    span: (usize, usize),
    keys: [&[u8]; N],
) -> Option<[Option<Tok>; N]> {
    let mut out = [None; N];
    let mut w = Walker { s: &s[..span.1], i: span.0 };
    w.object(1, |k, v, _| {
        for (n, key) in keys.iter().enumerate() {
            if k == *key {
                return set(&mut out[n], v);
            }
        }
        Some(())
    })?;
    Some(out)
}

/// An IPv6 address written in the normal form the Python reader gives it (what
/// `ipaddress.IPv6Address(raw).compressed` writes back: lowercase, no leading zeros, the
/// first longest run of two or more zero groups as `::`), as an integer. Not an
/// IPv4-mapped one (the reader turns it into its IPv4 address), nor a zone id or a
/// dotted part: those go to Python.
pub fn canonical_ipv6(s: &[u8]) -> Option<u128> {
    if s.len() < 2 || s.len() > 39 || !s.iter().all(|&c| c.is_ascii_hexdigit() || c == b':') {
        return None;
    }
    let addr: std::net::Ipv6Addr = std::str::from_utf8(s).ok()?.parse().ok()?;
    if addr.to_ipv4_mapped().is_some() || addr.to_string().as_bytes() != s {
        return None;
    }
    Some(u128::from(addr))
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn digits(s: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(v)
}

/// Suricata's `2023-01-01T00:00:00.123456+0000` as epoch seconds, exactly as
/// `(datetime.fromisoformat(s[:26]) - OFFSET_EPOCHS[s[26:]]).total_seconds()` gives it
/// (an integer count of microseconds divided by 10**6, correctly rounded: exact here
/// because the count stays below 2**53); None for anything else.
pub fn eve_ts(s: &[u8]) -> Option<f64> {
    if s.len() != 31
        || s[4] != b'-'
        || s[7] != b'-'
        || s[10] != b'T'
        || s[13] != b':'
        || s[16] != b':'
        || s[19] != b'.'
    {
        return None;
    }
    let year = digits(&s[0..4])?;
    let month = digits(&s[5..7])?;
    let day = digits(&s[8..10])?;
    let hour = digits(&s[11..13])?;
    let minute = digits(&s[14..16])?;
    let second = digits(&s[17..19])?;
    let micros = digits(&s[20..26])?;
    if year < 1 || !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if day < 1 || day > month_days[(month - 1) as usize] {
        return None;
    }
    // the offset table: every quarter hour from -1400 to +1400, and "-0000"
    let sign = match s[26] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let oh = digits(&s[27..29])?;
    let om = digits(&s[29..31])?;
    if om % 15 != 0 || om > 45 || oh * 60 + om > 14 * 60 {
        return None;
    }
    let offset_minutes = sign * (oh * 60 + om);
    let seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    let us = seconds * 1_000_000 + micros;
    if !(0..(1i64 << 53)).contains(&us) {
        return None;
    }
    Some(us as f64 / 1e6)
}

/// A non-negative integer token's value (at most 18 digits, so no overflow).
fn uint(s: &[u8], t: Tok) -> Option<u64> {
    match t {
        Tok::Int(a, b) if s[a] != b'-' && b - a <= 18 => Some(digits(&s[a..b])? as u64),
        _ => None,
    }
}

fn hex_flags(s: &[u8], t: Tok) -> Option<u8> {
    let Tok::Str(a, b) = t else { return None };
    let v = &s[a..b];
    if v.len() != 2 {
        return None;
    }
    let h = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    };
    Some(h(v[0])? << 4 | h(v[1])?)
}

pub enum Transport {
    Tcp,
    Udp,
}

pub enum Outcome {
    NoAnswer,
    Rejected,
    Established,
    Aborted,
    Unknown,
}

/// What a flow line holds, as spans of the line.
pub struct EveFlow<'a> {
    pub t: f64,
    pub src: &'a [u8],
    pub sport: u16,
    pub dst: &'a [u8],
    pub dport: u16,
    pub transport: Transport,
    pub outcome: Outcome,
    pub flow_id: Option<&'a [u8]>,
    pub community_id: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;

fn opt_str(s: &[u8], t: Option<Tok>) -> Option<Option<&[u8]>> {
    match t {
        None | Some(Tok::Null) => Some(None),
        Some(Tok::Str(a, b)) => Some(Some(&s[a..b])),
        _ => None,
    }
}

/// A `flow` event's Flow values, or None (the line goes to Python). `valid_ip` says
/// whether an address string is its own normal form (canonical dotted quad).
pub fn parse_flow<'a>(s: &'a [u8], valid_ip: impl Fn(&[u8]) -> bool) -> Option<EveFlow<'a>> {
    if s.first() != Some(&b'{') || !s.is_ascii() || memchr::memchr(b'\\', s).is_some() {
        return None;
    }
    const KEYS: [&[u8]; 11] = [
        b"event_type",
        b"flow",
        b"src_ip",
        b"dest_ip",
        b"proto",
        b"src_port",
        b"dest_port",
        b"tcp",
        b"flow_id",
        b"community_id",
        b"host",
    ];
    let mut top = [None; 11];
    let mut w = Walker { s, i: 0 };
    w.object(1, |k, v, _| {
        // the usual keys come first in the order Suricata writes them
        for (n, key) in KEYS.iter().enumerate() {
            if k == *key {
                return set(&mut top[n], v);
            }
        }
        Some(())
    })?;
    w.ws();
    if w.i != s.len() {
        return None;
    }
    let [event_type, flow, src, dst, proto, sport, dport, tcp, flow_id, cid, host] = top;
    let Some(Tok::Str(a, b)) = event_type else { return None };
    if &s[a..b] != b"flow" {
        return None;
    }
    let Some(Tok::Obj(fa, fb)) = flow else { return None };
    let [start, to_client, to_server, state] =
        members(s, (fa, fb), [b"start", b"pkts_toclient", b"pkts_toserver", b"state"])?;
    let Some(Tok::Str(a, b)) = start else { return None };
    let t = eve_ts(&s[a..b])?;
    let (Some(Tok::Str(sa, sb)), Some(Tok::Str(da, db))) = (src, dst) else { return None };
    let (src, dst) = (&s[sa..sb], &s[da..db]);
    if !valid_ip(src) || !valid_ip(dst) {
        return None;
    }
    let transport = match proto? {
        Tok::Str(a, b) => match &s[a..b] {
            b"TCP" | b"tcp" => Transport::Tcp,
            b"UDP" | b"udp" => Transport::Udp,
            _ => return None,
        },
        Tok::Int(a, b) => match &s[a..b] {
            b"6" => Transport::Tcp,
            b"17" => Transport::Udp,
            _ => return None,
        },
        _ => return None,
    };
    let sport = uint(s, sport?)?;
    let dport = uint(s, dport?)?;
    if sport > 65535 || dport > 65535 {
        return None;
    }
    let to_client = uint(s, to_client?)?;
    let outcome = match transport {
        Transport::Udp => {
            if to_client != 0 {
                Outcome::Established
            } else {
                Outcome::NoAnswer
            }
        }
        Transport::Tcp if to_client == 0 => Outcome::NoAnswer,
        Transport::Tcp => {
            let Some(Tok::Obj(ta, tb)) = tcp else { return None };
            let [tc, ts] = members(s, (ta, tb), [b"tcp_flags_tc", b"tcp_flags_ts"])?;
            let flags = hex_flags(s, tc?)?;
            // tcp_flags_ts: a flag string, else 0 (a list or object would be unhashable)
            let ts_flags = match ts {
                None => 0,
                Some(Tok::Arr) | Some(Tok::Obj(..)) => return None,
                Some(t) => hex_flags(s, t).unwrap_or(0),
            };
            let answered = match state {
                None => false,
                Some(Tok::Str(a, b)) => matches!(&s[a..b], b"established" | b"closed"),
                Some(Tok::Arr) | Some(Tok::Obj(..)) => return None,
                Some(_) => false,
            };
            // the truth of pkts_toserver (read only for an answered state)
            let to_server = match to_server {
                None | Some(Tok::Null) | Some(Tok::False) => false,
                Some(Tok::True) => true,
                Some(Tok::Str(a, b)) => b > a,
                Some(t @ Tok::Int(..)) => uint(s, t)? != 0,
                Some(_) => return None,
            };
            if flags & RST != 0 && flags & SYN == 0 {
                Outcome::Rejected
            } else if flags & SYN != 0 {
                if (flags | ts_flags) & RST != 0 {
                    Outcome::Aborted
                } else {
                    Outcome::Established
                }
            } else if answered && to_server {
                Outcome::Established
            } else {
                Outcome::Unknown
            }
        }
    };
    let flow_id = match flow_id {
        None | Some(Tok::Null) => None,
        // an int (as orjson reads it): str(int) writes back the same text unless "-0"
        Some(Tok::Int(a, b)) if &s[a..b] != b"-0" => Some(&s[a..b]),
        Some(_) => return None,
    };
    let community_id = opt_str(s, cid)?;
    let host = opt_str(s, host)?;
    Some(EveFlow {
        t,
        src,
        sport: sport as u16,
        dst,
        dport: dport as u16,
        transport,
        outcome,
        flow_id,
        community_id,
        host,
    })
}
