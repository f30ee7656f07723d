//! Trigram filters for the in-memory store: each group of names has a Bloom filter of
//! its lowercase trigrams, so that a substring search scans only groups that may match.

/// 64-bit words in a group's trigram filter (4096 bits).
pub const BLOOM_WORDS: usize = 64;

/// A group's trigram filter.
pub type Bloom = [u64; BLOOM_WORDS];

/// The filter bits of a needle's trigrams.
pub struct Trigrams(Vec<usize>);

impl Trigrams {
    fn bit(window: &[u8]) -> usize {
        let h = u32::from(window[0])
            .wrapping_mul(0x9E37_79B1)
            .wrapping_add(u32::from(window[1]).wrapping_mul(0x85EB_CA77))
            .wrapping_add(u32::from(window[2]).wrapping_mul(0xC2B2_AE3D));
        ((h ^ (h >> 15)) as usize) % (BLOOM_WORDS * 64)
    }

    /// `None` for needles too short to have a trigram (they scan everything).
    pub fn of(needle: &[u8]) -> Option<Trigrams> {
        (needle.len() >= 3).then(|| Trigrams(needle.windows(3).map(Trigrams::bit).collect()))
    }

    pub fn add(bloom: &mut Bloom, name: &[u8]) {
        for bit in name.windows(3).map(Trigrams::bit) {
            bloom[bit / 64] |= 1 << (bit % 64);
        }
    }

    pub fn within(&self, bloom: &Bloom) -> bool {
        self.0
            .iter()
            .all(|&bit| bloom[bit / 64] & (1 << (bit % 64)) != 0)
    }
}
