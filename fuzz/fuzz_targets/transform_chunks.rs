//! The streaming transform under arbitrary splits and output sizes equals the one-shot output,
//! and both equal the reference model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcase_core::{Transform, Uppercase};
use upcase_model::{pieces, upper};

fn run(input: &[u8], cuts: &[u16], out_size: usize) -> Vec<u8> {
    let mut t = Uppercase::new();
    let mut buf = vec![0u8; out_size];
    let mut out = Vec::new();
    for r in pieces(input.len(), cuts) {
        let mut chunk = &input[r];
        while !chunk.is_empty() {
            let p = t.process(chunk, &mut buf);
            assert!(p.read > 0 || p.written > 0, "no progress");
            assert!(p.read <= chunk.len() && p.written <= buf.len());
            out.extend_from_slice(&buf[..p.written]);
            chunk = &chunk[p.read..];
        }
    }
    loop {
        let n = t.finish(&mut buf);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fuzz_target!(|case: (Vec<u8>, Vec<u16>)| {
    let (input, cuts) = case;
    let one_shot = run(&input, &[], input.len() * 3 + 8);
    assert_eq!(one_shot, upper(&input));
    for out_size in 1..=7 {
        assert_eq!(
            run(&input, &cuts, out_size),
            one_shot,
            "out_size {out_size}"
        );
    }
});
