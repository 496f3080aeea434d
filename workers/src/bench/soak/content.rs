//! What the soak's runners write: a log that is a pure function of (seed, offset), so that any
//! byte range of any build can be regenerated to check what a reader or a tail received, and
//! the archive's length and CRC32 can be checked without keeping the logs in memory (the run
//! writes gigabytes).
//!
//! The log is made of [`BLOCK`]-byte blocks, each drawn from a PRNG seeded with the build's
//! seed and the block's index: numbered lines with ANSI colours, GitLab section markers, CR/LF
//! and bytes that are not UTF-8 (lone continuation bytes, 0xff/0xfe, NUL), as real job logs
//! carry.

/// Bytes per generated block: small enough that a 1-byte range read regenerates little.
pub const BLOCK: u64 = 4096;

const ODD: [&[u8]; 5] = [b"\xff\xfe", b"\x80\xbf", b"\xc3\x28", b"\xe2\x82", b"\x00"];

/// `len` bytes of the log of `seed` from `offset`.
pub fn bytes(seed: u64, offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let block = at / BLOCK;
        let data = block_bytes(seed, block);
        let from = (at - block * BLOCK) as usize;
        let to = ((end - block * BLOCK).min(BLOCK)) as usize;
        out.extend_from_slice(&data[from..to]);
        at = block * BLOCK + to as u64;
    }
    out
}

/// CRC32 (IEEE, as runners send it) of the first `len` bytes.
pub fn crc32(seed: u64, len: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let mut at = 0;
    while at < len {
        let block = at / BLOCK;
        let data = block_bytes(seed, block);
        let to = (len - block * BLOCK).min(BLOCK) as usize;
        hasher.update(&data[..to]);
        at = block * BLOCK + to as u64;
    }
    hasher.finalize()
}

/// The position of the first byte of `got` (read at `offset`) that differs from the log.
pub fn first_difference(seed: u64, offset: u64, got: &[u8]) -> Option<u64> {
    let want = bytes(seed, offset, got.len() as u64);
    want.iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .map(|p| offset + p as u64)
}

fn block_bytes(seed: u64, block: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ block.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let size = BLOCK as usize;
    let mut out = Vec::with_capacity(size + 256);
    let mut line = block * 64;
    while out.len() < size {
        match rng.below(16) {
            0 => out.extend_from_slice(
                format!(
                    "section_start:{}:step_{line}\r\x1b[0K",
                    1_700_000_000 + line
                )
                .as_bytes(),
            ),
            1 => out.extend_from_slice(b"\x1b[31;1mERROR: \x1b[0;m"),
            _ => out.extend_from_slice(format!("\x1b[32;1m$ line {line}\x1b[0;m ").as_bytes()),
        }
        for _ in 0..rng.below(3) {
            out.extend_from_slice(ODD[rng.below(ODD.len() as u64) as usize]);
        }
        let filler = rng.below(100) as usize;
        out.extend((0..filler).map(|i| b'a' + ((i as u64 + line) % 26) as u8));
        out.extend_from_slice(if rng.below(4) == 0 { b"\r\n" } else { b"\n" });
        line += 1;
    }
    out.truncate(size);
    out
}

/// xorshift64*: cheap, reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `lo..hi` (`lo` when empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_reads_as_the_same_bytes_as_the_whole_log() {
        let whole = bytes(7, 0, 3 * BLOCK + 17);
        assert_eq!(bytes(7, 100, 5000), whole[100..5100]);
        assert_eq!(
            bytes(7, BLOCK, 1),
            whole[BLOCK as usize..BLOCK as usize + 1]
        );
        assert_eq!(crc32(7, whole.len() as u64), crc32fast::hash(&whole));
        assert_eq!(first_difference(7, 10, &whole[10..90]), None);
    }
}
