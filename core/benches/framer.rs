//! The line framer: lines per second for 16 B, 64 B and 1 KiB lines, read in place in 16 KiB
//! reads as the std server does. `cargo bench --bench framer`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use upcase_core::{Frame, LineFramer};

fn frame_all(framer: &mut LineFramer<Vec<u8>>, input: &[u8]) -> usize {
    let mut lines = 0;
    for chunk in input.chunks(16 * 1024) {
        let mut chunk = chunk;
        while !chunk.is_empty() {
            let spare = framer.spare();
            let n = spare.len().min(chunk.len());
            spare[..n].copy_from_slice(&chunk[..n]);
            framer.commit(n);
            chunk = &chunk[n..];
            while let Frame::Line(_) = framer.poll() {
                lines += 1;
            }
        }
    }
    lines
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("framer");
    for line_len in [16usize, 64, 1024] {
        let count = (1 << 20) / (line_len + 1);
        let mut input = Vec::with_capacity(count * (line_len + 1));
        for i in 0..count {
            input.extend((0..line_len).map(|k| b'a' + ((i + k) % 26) as u8));
            input.push(b'\n');
        }
        group.throughput(Throughput::Elements(count as u64));
        let mut framer = LineFramer::new(vec![0u8; 8193]);
        assert_eq!(frame_all(&mut framer, &input), count);
        group.bench_with_input(BenchmarkId::new("lines", line_len), &input, |b, i| {
            b.iter(|| frame_all(&mut framer, i))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
