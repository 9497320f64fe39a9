//! Pure line splitting over a byte stream: complete lines are handed out as
//! they arrive, a partial line waits for its newline, a line longer than the
//! limit is cut (at a UTF-8 boundary when possible) instead of growing
//! without bound, and `finish` delivers a final line without newline.

pub struct LineSplitter {
    partial: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter { partial: Vec::new(), max: max.max(4) }
    }

    /// Feeds a chunk; calls `emit` for every complete (or over-long) line,
    /// without its newline.
    pub fn push(&mut self, mut chunk: &[u8], emit: &mut dyn FnMut(&[u8])) {
        while !chunk.is_empty() {
            let room = self.max - self.partial.len();
            // One byte past the room: a newline right at the limit still
            // ends the line instead of producing an empty one.
            let window = &chunk[..chunk.len().min(room + 1)];
            match memchr::memchr(b'\n', window) {
                Some(i) => {
                    if self.partial.is_empty() {
                        emit(&chunk[..i]);
                    } else {
                        self.partial.extend_from_slice(&chunk[..i]);
                        emit(&self.partial);
                        self.partial.clear();
                    }
                    chunk = &chunk[i + 1..];
                }
                None if window.len() > room => {
                    self.partial.extend_from_slice(&window[..room]);
                    chunk = &chunk[room..];
                    let cut = utf8_cut(&self.partial);
                    emit(&self.partial[..cut]);
                    self.partial.drain(..cut);
                }
                None => {
                    self.partial.extend_from_slice(window);
                    chunk = &[];
                }
            }
        }
    }

    /// Delivers what is left as a last line (the stream ended).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

/// Where to cut a full buffer: before a UTF-8 sequence that would otherwise
/// be split, unless that would leave nothing.
fn utf8_cut(buf: &[u8]) -> usize {
    let len = buf.len();
    for back in 1..=3.min(len) {
        let b = buf[len - back];
        if b & 0xC0 == 0xC0 {
            let need = if b >= 0xF0 {
                4
            } else if b >= 0xE0 {
                3
            } else {
                2
            };
            return if need > back && len > back { len - back } else { len };
        }
        if b & 0xC0 != 0x80 {
            return len;
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |l| out.push(l.to_vec()));
        }
        s.finish(&mut |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn table() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(split(&[b"a\nb\n"], 100), v(&["a", "b"]));
        assert_eq!(split(&[b"he", b"llo\nwo", b"rld"], 100), v(&["hello", "world"]));
        assert_eq!(split(&[b"\n\n"], 100), v(&["", ""]));
        assert_eq!(split(&[b"abcdefghij\n"], 4), v(&["abcd", "efgh", "ij"]));
        assert_eq!(split(&[b"ab", b"cdef", b"g\n"], 4), v(&["abcd", "efg"]));
        assert_eq!(split(&[b"abcd\n"], 4), v(&["abcd"]));
        assert_eq!(split(&[b"abcd", b"\n"], 4), v(&["abcd"]));
        // "é" is two bytes: do not cut between them.
        assert_eq!(split(&["abcé\n".as_bytes()], 4), v(&["abc", "é"]));
        assert!(split(&[], 4).is_empty());
    }
}
