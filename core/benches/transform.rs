//! The streaming uppercase transform against two baselines, on six texts and three sizes (64 B,
//! 4 KiB, 64 KiB; `Throughput::Bytes` of input): a copy plus `make_ascii_uppercase` (the floor
//! for ASCII; issue 12's target is 0.9x of it at 4 KiB and 64 KiB), and `str::to_uppercase`
//! (what a std server calls). The `unicode` text is the load generator's `--unicode` text
//! (`upcase_model::unicode_text`: Latin, Greek, Cyrillic, CJK, emoji, growing characters).
//! `cargo bench -p upcase-core --features fast --bench transform` (the feature upcase-std uses).

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
    let unicode = upcase_model::unicode_text(7, 65536);
    let samples = SAMPLES
        .iter()
        .copied()
        .chain([("unicode", unicode.as_str())]);
    for (name, sample) in samples {
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
            // Correctness of what is measured: the same bytes as the model.
            let n = upcase(input.as_bytes(), &mut out);
            assert_eq!(&out[..n], upcase_model::upper(input.as_bytes()));
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
