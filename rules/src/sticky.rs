//! Weighted, sticky choice between the monolith and a new service. A key (user id, cookie, …)
//! hashes to one of 10,000 buckets with a stable hash salted by the route name; the request goes
//! to the new service when its bucket is below the weight in basis points. So one key always lands
//! on the same side at a given weight, and raising the weight only moves keys from legacy to new.

/// Buckets per route: weights are kept to 0.01 %.
pub const BUCKETS: u64 = 10_000;

/// The bucket of `key` on route `route`: stable across processes, versions and machines.
pub fn bucket(route: &str, key: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(route.as_bytes());
    h.write(&[0xff]);
    h.write(key);
    mix(h.0) % BUCKETS
}

/// A stable 64-bit hash of `bytes` (the same function, unsalted).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write(bytes);
    mix(h.0)
}

/// A bucket for a request with no key: spread by the caller's random number.
pub fn random_bucket(random: u64) -> u64 {
    mix(random) % BUCKETS
}

/// True when a request in `bucket` goes to the new service at `weight_bp` basis points.
pub fn to_new(bucket: u64, weight_bp: u16) -> bool {
    bucket < u64::from(weight_bp)
}

/// FNV-1a, 64-bit: simple, fixed forever, and fast on short keys.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// splitmix64's finaliser: spreads FNV's weak low bits before the modulo.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_stable() {
        // Fixed values: changing the hash would move users between sides on upgrade.
        assert_eq!(bucket("orders", b"user-1"), bucket("orders", b"user-1"));
        assert_ne!(bucket("orders", b"user-1"), bucket("orders", b"user-2"));
        assert_eq!(bucket("orders", b"user-1"), 8_097);
    }

    #[test]
    fn distribution_is_close_to_weight() {
        for weight in [1u16, 10, 25, 50, 90] {
            let n = 20_000;
            let hits = (0..n)
                .filter(|i| to_new(bucket("r", format!("k{i}").as_bytes()), weight * 100))
                .count();
            let pct = hits as f64 * 100.0 / n as f64;
            assert!(
                (pct - f64::from(weight)).abs() < 1.5,
                "weight {weight}: {pct}%"
            );
        }
    }
}
