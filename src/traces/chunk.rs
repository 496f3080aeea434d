//! Chunk arithmetic. A trace is cut into chunks of [`CHUNK_SIZE`] bytes: byte `offset` lives in
//! chunk `offset / CHUNK_SIZE`; every chunk but the last is full.

/// GitLab's `Ci::BuildTraceChunk::CHUNK_SIZE`: large enough that a busy log makes few chunk
/// rows, small enough that a Redis value and a flush stay cheap.
pub const CHUNK_SIZE: u64 = 128 * 1024;

/// One piece of an append, inside one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub chunk_index: u64,
    /// Where the piece starts inside its chunk.
    pub offset_in_chunk: u64,
    /// Range of the appended bytes this piece carries.
    pub start: usize,
    pub end: usize,
}

pub fn chunk_index(offset: u64) -> u64 {
    offset / CHUNK_SIZE
}

/// Cuts an append of `len` bytes at trace offset `offset` at chunk boundaries.
pub fn split(offset: u64, len: usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut at = offset;
    let mut start = 0usize;
    while start < len {
        let within = at % CHUNK_SIZE;
        let room = (CHUNK_SIZE - within) as usize;
        let take = room.min(len - start);
        pieces.push(Piece {
            chunk_index: at / CHUNK_SIZE,
            offset_in_chunk: within,
            start,
            end: start + take,
        });
        at += take as u64;
        start += take;
    }
    pieces
}

/// The CRC32 of a whole trace from its chunks' CRC32s, without reading the bytes again
/// (what GitLab does with `Zlib.crc32_combine` when the runner sends its checksum). Takes
/// `(crc32, length)` in chunk order.
pub fn combine_crc32(chunks: impl IntoIterator<Item = (u32, u64)>) -> u32 {
    let mut total = crc32fast::Hasher::new();
    for (crc, len) in chunks {
        let part = crc32fast::Hasher::new_with_initial_len(crc, len);
        total.combine(&part);
    }
    total.finalize()
}

/// A runner's checksum, `crc32:%08x`; `None` if malformed.
pub fn parse_runner_crc32(raw: &str) -> Option<u32> {
    let hex = raw.strip_prefix("crc32:")?;
    if hex.is_empty() || hex.len() > 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

pub fn format_crc32(crc: u32) -> String {
    format!("crc32:{crc:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_inside_one_chunk_is_one_piece() {
        assert_eq!(
            split(10, 5),
            vec![Piece {
                chunk_index: 0,
                offset_in_chunk: 10,
                start: 0,
                end: 5
            }]
        );
    }

    #[test]
    fn an_append_across_boundaries_is_cut_at_each() {
        let c = CHUNK_SIZE;
        let pieces = split(c - 3, (2 * c + 5) as usize);
        assert_eq!(
            pieces,
            vec![
                Piece {
                    chunk_index: 0,
                    offset_in_chunk: c - 3,
                    start: 0,
                    end: 3
                },
                Piece {
                    chunk_index: 1,
                    offset_in_chunk: 0,
                    start: 3,
                    end: 3 + c as usize
                },
                Piece {
                    chunk_index: 2,
                    offset_in_chunk: 0,
                    start: 3 + c as usize,
                    end: 3 + 2 * c as usize
                },
                Piece {
                    chunk_index: 3,
                    offset_in_chunk: 0,
                    start: 3 + 2 * c as usize,
                    end: 5 + 2 * c as usize
                },
            ]
        );
        assert!(split(5, 0).is_empty());
        assert_eq!(chunk_index(c), 1);
    }

    #[test]
    fn combined_chunk_crcs_equal_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 777))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let chunks = data
            .chunks(CHUNK_SIZE as usize)
            .map(|c| (crc32fast::hash(c), c.len() as u64));
        assert_eq!(combine_crc32(chunks), crc32fast::hash(&data));
        assert_eq!(combine_crc32(std::iter::empty()), crc32fast::hash(b""));
    }

    #[test]
    fn runner_checksums_parse_only_in_their_exact_form() {
        assert_eq!(parse_runner_crc32("crc32:0000beef"), Some(0xbeef));
        assert_eq!(
            parse_runner_crc32(&format_crc32(0xdeadbeef)),
            Some(0xdeadbeef)
        );
        for bad in [
            "0000beef",
            "crc32:",
            "crc32:xyz",
            "crc32:123456789",
            "md5:00",
            "crc32:+1",
        ] {
            assert_eq!(parse_runner_crc32(bad), None, "{bad}");
        }
    }
}
