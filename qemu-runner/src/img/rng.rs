//! A small seeded generator (xorshift64*) for choices that must replay the same way every time:
//! crash cuts (`replay`, `logcut`) and the tests' mutations.

/// xorshift64*: seeded choices that replay the same way every time.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self::from_state(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// A generator whose state is `state` (made odd, so never the stuck all-zero state).
    pub fn from_state(state: u64) -> Self {
        Self(state | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}
