//! The streaming uppercase transform against two baselines, on five scripts and three sizes:
//! a copy plus `make_ascii_uppercase` (the floor for ASCII), and `str::to_uppercase` (what a
//! naive server calls). `cargo bench --bench transform`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use upcase_core::{Transform, Uppercase};

/// Text of exactly `size` bytes or a little less (never splitting a character), from `sample`.
fn text(sample: &str, size: usize) -> String {
    let mut s = String::with_capacity(size);
    for c in sample.chars().cycle() {
        if s.len() + c.len_utf8() > size {
            break;
        }
        s.push(c);
    }
    s
}

const SAMPLES: &[(&str, &str)] = &[
    (
        "ascii",
        "The quick brown fox jumps over the lazy dog; 0123456789. ",
    ),
    (
        "latin",
        "Größe, façade, naïve, Ærøskøbing, señor, œuvre, déjà vu. ",
    ),
    ("greek", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Σίσυφος. "),
    ("cjk", "日本語のテキストと中文文本和한국어 텍스트。"),
    (
        "mixed",
        "hello Größe Σίσυφος Привет мир 日本語 😀 straße ﬁ. ",
    ),
];

fn upcase(input: &[u8], out: &mut [u8]) -> usize {
    let mut t = Uppercase::new();
    let p = t.process(input, out);
    p.written + t.finish(&mut out[p.written..])
}

fn bench(c: &mut Criterion) {
    for &(name, sample) in SAMPLES {
        let mut group = c.benchmark_group(format!("transform/{name}"));
        for size in [64, 4096, 65536] {
            let input = text(sample, size);
            let mut out = vec![0u8; input.len() * 3];
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_with_input(BenchmarkId::new("upcase", size), &input, |b, i| {
                b.iter(|| upcase(black_box(i.as_bytes()), &mut out))
            });
            group.bench_with_input(
                BenchmarkId::new("copy_make_ascii_uppercase", size),
                &input,
                |b, i| {
                    b.iter(|| {
                        let dst = &mut out[..i.len()];
                        dst.copy_from_slice(black_box(i.as_bytes()));
                        dst.make_ascii_uppercase();
                    })
                },
            );
            group.bench_with_input(
                BenchmarkId::new("str_to_uppercase", size),
                &input,
                |b, i| b.iter(|| black_box(i.as_str()).to_uppercase()),
            );
            // Correctness of what is measured: the same bytes as the oracle.
            let n = upcase(input.as_bytes(), &mut out);
            assert_eq!(&out[..n], input.to_uppercase().as_bytes());
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
