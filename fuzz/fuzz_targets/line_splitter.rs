//! Log line splitter: any byte stream, cut into any chunks, with a small
//! line limit. Checked against the spec rather than a second
//! implementation: split the whole input on '\n' into logical lines (a
//! last one without newline counts if not empty); each logical line must
//! come out as one or more pieces, in order, that concatenate back to it
//! exactly. A piece never holds '\n' and never exceeds the limit; only a
//! line cut for length has several pieces, and every piece but its last is
//! cut at most 3 bytes short of the limit (backing off a UTF-8 sequence);
//! an empty piece appears only for an empty line; a line that is valid
//! UTF-8 is never cut inside a character.
//!
//! Input: byte 0 = limit (before LineSplitter's own floor of 4), byte 1 =
//! seed for the chunk sizes, the rest = the stream.
#![no_main]

use flowinit::logs::split::LineSplitter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [max_byte, seed, stream @ ..] = data else { return };
    let requested = usize::from(*max_byte % 64);
    let max = requested.max(4);
    let mut splitter = LineSplitter::new(requested);

    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut rng = u32::from(*seed) | 0x100;
    let mut rest = stream;
    while !rest.is_empty() {
        // xorshift: chunk sizes 0..=2*max, so chunks straddle the limit.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = (rng as usize % (2 * max + 1)).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        splitter.push(chunk, &mut |l| pieces.push(l.to_vec()));
        rest = tail;
    }
    splitter.finish(&mut |l| pieces.push(l.to_vec()));

    for p in &pieces {
        assert!(!p.contains(&b'\n'), "piece {p:?} holds a newline");
        assert!(p.len() <= max, "piece of {} bytes over the limit {max}", p.len());
    }

    let mut logical: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
    if logical.last().is_some_and(|l| l.is_empty()) {
        logical.pop();
    }
    let mut it = pieces.iter().peekable();
    for (n, line) in logical.iter().enumerate() {
        let mut got: Vec<u8> = Vec::new();
        let mut count = 0;
        loop {
            let Some(p) = it.next() else {
                panic!("logical line {n} {line:?}: pieces ran out after {got:?}");
            };
            assert!(!p.is_empty() || line.is_empty(), "empty piece inside line {n} {line:?}");
            if std::str::from_utf8(line).is_ok() {
                assert!(std::str::from_utf8(p).is_ok(), "line {n} {line:?} cut inside a character: {p:?}");
            }
            got.extend_from_slice(p);
            count += 1;
            assert!(line.starts_with(&got), "line {n}: pieces {got:?} do not match {line:?}");
            if got.len() == line.len() {
                break;
            }
            assert!(p.len() + 3 >= max, "line {n}: piece {p:?} cut too early (limit {max})");
        }
        assert!(count == 1 || line.len() > max, "line {n} {line:?} split without being over the limit");
    }
    assert!(it.next().is_none(), "more pieces than lines");
});
