//! Identifiers on the Chord ring.
//!
//! Chord (Stoica et al., SIGCOMM 2001, §4.2) places node and key identifiers on a
//! circle of `2^m` points. A key identifier is `SHA-1(key) mod 2^m` and a node
//! identifier is `SHA-1(address) mod 2^m`. This module provides:
//!
//! * [`Id`]: an unsigned integer of at most 160 bits (stored as a 32-bit high part
//!   and a 128-bit low part, so that `derive(Ord)` is numeric order);
//! * [`IdSpace`]: the ring of size `2^m` for one `m` in `3..=160`, which performs
//!   all modular arithmetic (`n + 2^(i-1)`, distances) and hashing.
//!
//! Ids are always kept reduced modulo `2^m` by the [`IdSpace`] that made them, so
//! comparisons between ids of one space are comparisons of ring positions
//! measured from 0.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha1::{Digest, Sha1};
use std::fmt;

use crate::ChordError;

/// Smallest supported identifier length in bits.
pub const MIN_BITS: u32 = 3;
/// Largest supported identifier length in bits (the length of a SHA-1 digest).
pub const MAX_BITS: u32 = 160;

/// A point on the identifier circle: an unsigned integer below `2^160`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id {
    /// Bits 128..160.
    hi: u32,
    /// Bits 0..128.
    lo: u128,
}

impl Id {
    /// The identifier 0.
    pub const ZERO: Id = Id { hi: 0, lo: 0 };

    /// An id from a 128-bit integer (callers reduce it with [`IdSpace::reduce`]).
    pub const fn from_u128(v: u128) -> Id {
        Id { hi: 0, lo: v }
    }

    /// An id from a 64-bit integer.
    pub const fn from_u64(v: u64) -> Id {
        Id {
            hi: 0,
            lo: v as u128,
        }
    }

    /// The value as a `u128` if it fits (always true for `m <= 128`).
    pub fn to_u128(self) -> Option<u128> {
        (self.hi == 0).then_some(self.lo)
    }

    /// The value as a `u64` if it fits (always true for `m <= 64`).
    pub fn to_u64(self) -> Option<u64> {
        self.to_u128().and_then(|v| u64::try_from(v).ok())
    }

    /// The id from a big-endian 20-byte SHA-1 digest, unreduced.
    pub fn from_be_bytes(b: [u8; 20]) -> Id {
        let hi = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let mut lo_bytes = [0u8; 16];
        lo_bytes.copy_from_slice(&b[4..20]);
        Id {
            hi,
            lo: u128::from_be_bytes(lo_bytes),
        }
    }

    /// Big-endian 20-byte encoding.
    pub fn to_be_bytes(self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..4].copy_from_slice(&self.hi.to_be_bytes());
        out[4..].copy_from_slice(&self.lo.to_be_bytes());
        out
    }

    /// Number of significant bits (0 for the id 0).
    pub fn bit_len(self) -> u32 {
        if self.hi != 0 {
            128 + (32 - self.hi.leading_zeros())
        } else {
            128 - self.lo.leading_zeros()
        }
    }

    /// Approximate value as a float, used for plots and statistics only.
    pub fn to_f64(self) -> f64 {
        self.hi as f64 * 2f64.powi(128) + self.lo as f64
    }

    fn wrapping_add_raw(self, o: Id) -> Id {
        let (lo, carry) = self.lo.overflowing_add(o.lo);
        Id {
            hi: self.hi.wrapping_add(o.hi).wrapping_add(carry as u32),
            lo,
        }
    }

    fn wrapping_sub_raw(self, o: Id) -> Id {
        let (lo, borrow) = self.lo.overflowing_sub(o.lo);
        Id {
            hi: self.hi.wrapping_sub(o.hi).wrapping_sub(borrow as u32),
            lo,
        }
    }
}

impl fmt::Display for Id {
    /// Decimal when the id fits in 128 bits, otherwise `0x`-prefixed hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hi == 0 {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "0x{:x}{:032x}", self.hi, self.lo)
        }
    }
}

impl Serialize for Id {
    /// A JSON number when the id fits in 64 bits, otherwise its [`fmt::Display`]
    /// string (decimal up to 128 bits, `0x` hex above).
    ///
    /// Binary formats (postcard on the network driver's wire) get the fixed
    /// 20-byte big-endian encoding instead: they cannot decode the untagged
    /// number-or-string form.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return self.to_be_bytes().serialize(s);
        }
        match self.to_u64() {
            Some(v) => s.serialize_u64(v),
            None => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        if !d.is_human_readable() {
            return <[u8; 20]>::deserialize(d).map(Id::from_be_bytes);
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(u64),
            Str(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(Id::from_u64(v)),
            Repr::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for Id {
    type Err = String;

    /// Parses a decimal id (up to 128 bits) or a `0x`-prefixed hex id (up to 160).
    fn from_str(s: &str) -> Result<Id, String> {
        if let Some(h) = s.strip_prefix("0x") {
            if h.is_empty() || h.len() > 40 {
                return Err(format!("bad hex id {s:?}"));
            }
            let padded = format!("{h:0>40}");
            let mut b = [0u8; 20];
            for (i, chunk) in b.iter_mut().enumerate() {
                *chunk = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16)
                    .map_err(|_| format!("bad hex id {s:?}"))?;
            }
            Ok(Id::from_be_bytes(b))
        } else {
            s.parse::<u128>()
                .map(Id::from_u128)
                .map_err(|_| format!("bad id {s:?}"))
        }
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The identifier circle of size `2^bits`, `bits` in `3..=160`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdSpace {
    bits: u32,
}

impl Default for IdSpace {
    /// The paper's deployed configuration: 160-bit SHA-1 identifiers (SIGCOMM §6.6).
    fn default() -> Self {
        IdSpace { bits: MAX_BITS }
    }
}

impl IdSpace {
    /// A ring of `2^bits` identifiers; `bits` must lie in `3..=160`.
    pub fn new(bits: u32) -> Result<IdSpace, ChordError> {
        if (MIN_BITS..=MAX_BITS).contains(&bits) {
            Ok(IdSpace { bits })
        } else {
            Err(ChordError::BitsOutOfRange { bits })
        }
    }

    /// `m`, the identifier length in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The largest id, `2^m - 1`.
    pub fn max(&self) -> Id {
        let b = self.bits;
        if b >= 128 {
            let hb = b - 128;
            Id {
                hi: if hb == 32 { u32::MAX } else { (1u32 << hb) - 1 },
                lo: u128::MAX,
            }
        } else {
            Id {
                hi: 0,
                lo: (1u128 << b) - 1,
            }
        }
    }

    /// `v mod 2^m`.
    pub fn reduce(&self, v: Id) -> Id {
        let m = self.max();
        Id {
            hi: v.hi & m.hi,
            lo: v.lo & m.lo,
        }
    }

    /// Whether `v` is already reduced modulo `2^m`.
    pub fn contains(&self, v: Id) -> bool {
        self.reduce(v) == v
    }

    /// An id from a `u128`, reduced modulo `2^m`.
    pub fn id_u128(&self, v: u128) -> Id {
        self.reduce(Id::from_u128(v))
    }

    /// An id from a `u64`, reduced modulo `2^m`.
    pub fn id(&self, v: u64) -> Id {
        self.reduce(Id::from_u64(v))
    }

    /// `2^i mod 2^m`.
    pub fn pow2(&self, i: u32) -> Id {
        if i >= self.bits {
            Id::ZERO
        } else if i >= 128 {
            Id {
                hi: 1 << (i - 128),
                lo: 0,
            }
        } else {
            Id { hi: 0, lo: 1 << i }
        }
    }

    /// `(a + b) mod 2^m`.
    pub fn add(&self, a: Id, b: Id) -> Id {
        self.reduce(a.wrapping_add_raw(b))
    }

    /// `(a - b) mod 2^m`.
    pub fn sub(&self, a: Id, b: Id) -> Id {
        self.reduce(a.wrapping_sub_raw(b))
    }

    /// Clockwise distance from `a` to `b`: `(b - a) mod 2^m`.
    pub fn distance(&self, a: Id, b: Id) -> Id {
        self.sub(b, a)
    }

    /// `finger[i].start = (n + 2^(i-1)) mod 2^m` for `1 <= i <= m` (SIGCOMM Table 1).
    /// For `i = m + 1` this returns `n`, the end of the last finger interval.
    pub fn finger_start(&self, n: Id, i: u32) -> Id {
        debug_assert!(i >= 1 && i <= self.bits + 1);
        if i == self.bits + 1 {
            n
        } else {
            self.add(n, self.pow2(i - 1))
        }
    }

    /// `SHA-1(bytes) mod 2^m` (SIGCOMM §4.2): the low `m` bits of the digest read
    /// as a big-endian integer.
    pub fn hash(&self, bytes: &[u8]) -> Id {
        let digest: [u8; 20] = Sha1::digest(bytes).into();
        self.reduce(Id::from_be_bytes(digest))
    }

    /// A uniformly random id, drawn from a caller-supplied seeded generator.
    pub fn random<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Id {
        let hi = rng.next_u32();
        let lo = ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128;
        self.reduce(Id { hi, lo })
    }

    /// The id as a fraction of the circle in `[0, 1)`, for pictures.
    pub fn fraction(&self, v: Id) -> f64 {
        v.to_f64() / 2f64.powi(self.bits as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_outside_3_to_160_are_rejected() {
        assert!(IdSpace::new(2).is_err());
        assert!(IdSpace::new(161).is_err());
        assert!(IdSpace::new(3).is_ok());
        assert!(IdSpace::new(160).is_ok());
    }

    #[test]
    fn arithmetic_wraps_modulo_two_to_the_m_for_every_width() {
        for bits in MIN_BITS..=MAX_BITS {
            let s = IdSpace::new(bits).unwrap();
            let max = s.max();
            assert_eq!(max.bit_len(), bits);
            assert_eq!(s.add(max, s.id(1)), Id::ZERO);
            assert_eq!(s.sub(Id::ZERO, s.id(1)), max);
            assert_eq!(s.finger_start(max, 1), Id::ZERO);
            assert_eq!(s.pow2(bits - 1).bit_len(), bits);
            assert_eq!(s.add(s.pow2(bits - 1), s.pow2(bits - 1)), Id::ZERO);
            assert_eq!(s.distance(s.id(5), s.id(2)), s.sub(Id::ZERO, s.id(3)));
        }
    }

    #[test]
    fn ids_round_trip_through_text() {
        let s = IdSpace::new(160).unwrap();
        for v in [s.max(), s.id(0), s.id(90), s.hash(b"x")] {
            assert_eq!(v.to_string().parse::<Id>().unwrap(), v);
        }
    }

    #[test]
    fn sha1_ids_are_the_low_m_bits_of_the_digest() {
        // SHA-1("abc") = a9993e36 4706816a ba3e2571 7850c26c 9cd0d89d
        let full = IdSpace::new(160).unwrap().hash(b"abc");
        assert_eq!(
            full.to_be_bytes(),
            [
                0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
            ]
        );
        assert_eq!(IdSpace::new(8).unwrap().hash(b"abc"), Id::from_u64(0x9d));
        assert_eq!(
            IdSpace::new(7).unwrap().hash(b"abc"),
            Id::from_u64(0x9d & 0x7f)
        );
    }
}
