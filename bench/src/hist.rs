//! Latency histogram: log-linear buckets over nanoseconds, fixed size whatever the run length,
//! with the exact maximum kept beside it.

/// Values below this are counted exactly; above it each power of two is cut into
/// `SUB_BUCKETS` buckets, so a reported percentile is within 1/128 (0.8 %) of the true value.
const SUB_BUCKETS: u64 = 128;
const EXACT: u64 = 2 * SUB_BUCKETS;
/// Powers of two from 2^8 to 2^63 above the exact range.
const BUCKETS: usize = EXACT as usize + (64 - 8) * SUB_BUCKETS as usize;

pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, sum: 0, max: 0 }
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.sum += u128::from(ns);
        self.max = self.max.max(ns);
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> u64 {
        if self.total == 0 { 0 } else { (self.sum / u128::from(self.total)) as u64 }
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket holding the sample of rank
    /// ceil(q * count), never above the recorded maximum; the maximum itself for the last
    /// rank. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(i);
                return (lo + (hi - lo) / 2).min(self.max);
            }
        }
        self.max
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let exp = 63 - u64::from(v.leading_zeros()); // >= 8
    let mantissa = v >> (exp - 7); // in [128, 256)
    (EXACT + (exp - 8) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)) as usize
}

/// Lowest and highest value counted in bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < EXACT {
        return (i, i);
    }
    let exp = (i - EXACT) / SUB_BUCKETS + 8;
    let mantissa = (i - EXACT) % SUB_BUCKETS + SUB_BUCKETS;
    let width = 1u64 << (exp - 7);
    let lo = mantissa << (exp - 7);
    (lo, lo + (width - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_bounds_agree() {
        for v in (0..5000u64).chain([1 << 20, 123_456_789, u64::MAX / 3, u64::MAX]) {
            let (lo, hi) = bounds(index(v));
            assert!(lo <= v && v <= hi, "{v} not in [{lo}, {hi}]");
            assert!((hi - lo) as f64 <= (v as f64) / 127.0, "{v}: bucket too wide");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_uniform_samples() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(us * 1000);
        }
        let rows =
            [(0.5, 5_000_000.0), (0.9, 9_000_000.0), (0.99, 9_900_000.0), (0.999, 9_990_000.0)];
        for (q, want) in rows {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(h.total, 10_000);
        assert_eq!(h.mean(), 5_000_500);
    }

    #[test]
    fn empty_and_single() {
        let mut h = Histogram::new();
        assert_eq!((h.quantile(0.5), h.max(), h.mean()), (0, 0, 0));
        h.record(42);
        assert_eq!((h.quantile(0.0), h.quantile(0.999), h.max()), (42, 42, 42));
    }
}
