//! Glyphs: a stand-in for MNIST, generated from the seed.
//!
//! Generative model, per example:
//!
//! 1. The class is exactly balanced: each block of ten consecutive examples
//!    holds every digit once, in an order drawn from the block's own stream.
//! 2. The digit's template (a few polylines in a unit box, drawn like a
//!    handwritten digit) is perturbed: optional strokes (the crossbar of a 7,
//!    the base of a 1) come and go, each stroke is shifted a little, and a
//!    smooth random displacement field bends all strokes, so no two examples
//!    of a class are alike even without jitter.
//! 3. A random affine map places it on the 28×28 grid: rotation, scale,
//!    aspect, shear and translation, all proportional to `jitter`
//!    (at the default 0.5: ±20°, ×0.8–1.15, ±3 px).
//! 4. The strokes are rendered anti-aliased from the distance of each pixel
//!    centre to the nearest segment, with a random thickness (1.2–2.8 px) and
//!    ink intensity (0.75–1).
//! 5. Gaussian pixel noise of standard deviation `noise` is added and the
//!    result clamped to [0, 1].
//!
//! Every random choice of an example comes from its own stream
//! (`glyphs/train` or `glyphs/heldout`, indexed by the example), so the
//! dataset does not depend on generation order and the two splits never
//! share an example.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use ridgeline_common::spec::GlyphsSpec;
use ridgeline_common::Task;

use crate::engine::data::{RawDataset, RawSplit, Targets};
use crate::engine::rng;

/// Side of the square images, in pixels.
pub const SIDE: usize = 28;
/// Number of classes (the digits 0–9).
pub const CLASSES: usize = 10;
const PIXELS: usize = SIDE * SIDE;
/// Height of the template's unit box in pixels before scaling. MNIST digits
/// fit a 20×20 box; a little less leaves room for scale and shift jitter.
const UNIT_PX: f32 = 18.0;

/// Generates the glyph digits of `spec`: `[1, 28, 28]` images with pixel
/// values in [0, 1], ten classes, both splits (see the module documentation
/// for the generative model).
pub fn generate(spec: &GlyphsSpec) -> RawDataset {
    let templates = templates();
    let split = |which: &str, n: usize| render_split(spec, &templates, which, n);
    RawDataset {
        name: format!("glyphs(seed={})", spec.seed),
        task: Task::Classification,
        input_shape: vec![1, SIDE, SIDE],
        outputs: CLASSES,
        train: split("train", spec.n_train),
        heldout: Some(split("heldout", spec.n_heldout)),
    }
}

fn render_split(spec: &GlyphsSpec, templates: &[Template], which: &str, n: usize) -> RawSplit {
    let purpose = format!("glyphs/{which}");
    let label_purpose = format!("glyphs/{which}/labels");
    let jitter = spec.jitter as f32;
    let noise = spec.noise as f32;
    let mut x = vec![0f32; n * PIXELS];
    let mut labels = Vec::with_capacity(n);
    // Reused across examples: the only per-example storage is the image.
    let mut segments = Vec::with_capacity(128);
    for (i, image) in x.chunks_exact_mut(PIXELS).enumerate() {
        let class = balanced_class(spec.seed, &label_purpose, i, CLASSES);
        let mut rng = rng::stream(spec.seed, &purpose, i as u64);
        let pen = place(&templates[class], jitter, &mut rng, &mut segments);
        render(&segments, pen, image);
        if noise > 0.0 {
            for v in image.iter_mut() {
                let z: f32 = rng.sample(StandardNormal);
                *v = (*v + noise * z).clamp(0.0, 1.0);
            }
        }
        labels.push(class as u32);
    }
    RawSplit {
        x,
        y: Targets::Classes(labels),
    }
}

/// Class of example `i`: every block of `classes` consecutive examples holds
/// each class once, in an order drawn from the block's own stream. Classes
/// are thus balanced exactly (up to the last, partial block), labels are not
/// a visible cycle, and the label still depends on `i` alone.
fn balanced_class(seed: u64, purpose: &str, i: usize, classes: usize) -> usize {
    let mut order: Vec<usize> = (0..classes).collect();
    order.shuffle(&mut rng::stream(seed, purpose, (i / classes) as u64));
    order[i % classes]
}

/// A digit: strokes in a unit box, x to the right, y downwards.
struct Template {
    strokes: Vec<Stroke>,
}

struct Stroke {
    points: Vec<[f32; 2]>,
    /// Probability that the stroke is drawn (1 for essential strokes).
    presence: f32,
}

/// Builds a polyline stroke point by point.
struct Pen(Vec<[f32; 2]>);

impl Pen {
    fn at(x: f32, y: f32) -> Pen {
        Pen(vec![[x, y]])
    }

    /// An elliptic arc from angle `from` to `to` (degrees; with y downwards,
    /// increasing angles run clockwise on screen: 0 right, 90 bottom,
    /// 180 left, 270 top), joined to the current point if there is one.
    fn arc(mut self, centre: [f32; 2], radii: [f32; 2], from: f32, to: f32) -> Pen {
        // About 15° per segment: smooth at 28×28 without many segments.
        let steps = ((to - from).abs() / 15.0).ceil().max(1.0) as usize;
        for k in 0..=steps {
            let a = (from + (to - from) * k as f32 / steps as f32).to_radians();
            self.0.push([
                centre[0] + radii[0] * a.cos(),
                centre[1] + radii[1] * a.sin(),
            ]);
        }
        self
    }

    fn ellipse(centre: [f32; 2], radii: [f32; 2]) -> Pen {
        Pen(Vec::new()).arc(centre, radii, -90.0, 270.0)
    }

    fn to(mut self, x: f32, y: f32) -> Pen {
        self.0.push([x, y]);
        self
    }

    fn stroke(self) -> Stroke {
        self.optional(1.0)
    }

    fn optional(self, presence: f32) -> Stroke {
        Stroke {
            points: self.0,
            presence,
        }
    }
}

/// The ten digit templates, indexed by class.
fn templates() -> Vec<Template> {
    let t = |strokes: Vec<Stroke>| Template { strokes };
    vec![
        // 0: an upright ellipse.
        t(vec![Pen::ellipse([0.5, 0.5], [0.27, 0.46]).stroke()]),
        // 1: a stem with a flag, sometimes a base.
        t(vec![
            Pen::at(0.36, 0.2).to(0.54, 0.02).to(0.5, 0.98).stroke(),
            Pen::at(0.34, 0.98).to(0.66, 0.98).optional(0.2),
        ]),
        // 2: a hook over the top, a diagonal, a base.
        t(vec![Pen(Vec::new())
            .arc([0.5, 0.3], [0.27, 0.26], 200.0, 380.0)
            .to(0.2, 0.98)
            .to(0.82, 0.98)
            .stroke()]),
        // 3: two bowls open to the left.
        t(vec![Pen(Vec::new())
            .arc([0.48, 0.27], [0.24, 0.23], 200.0, 450.0)
            .arc([0.48, 0.74], [0.27, 0.25], 270.0, 520.0)
            .stroke()]),
        // 4: an open four: a down-and-across stroke and a separate stem.
        t(vec![
            Pen::at(0.3, 0.02).to(0.18, 0.62).to(0.85, 0.62).stroke(),
            Pen::at(0.67, 0.06).to(0.66, 0.98).stroke(),
        ]),
        // 5: a flag, a down stroke and a belly.
        t(vec![Pen::at(0.78, 0.03)
            .to(0.32, 0.03)
            .to(0.28, 0.44)
            .arc([0.5, 0.68], [0.27, 0.27], 225.0, 520.0)
            .stroke()]),
        // 6: a curved descender into a closed loop at the bottom.
        t(vec![Pen::at(0.72, 0.04)
            .to(0.52, 0.14)
            .to(0.36, 0.32)
            .to(0.26, 0.56)
            .arc([0.5, 0.72], [0.24, 0.25], 180.0, 540.0)
            .stroke()]),
        // 7: a top bar and a diagonal, sometimes a crossbar.
        t(vec![
            Pen::at(0.18, 0.04).to(0.82, 0.04).to(0.44, 0.98).stroke(),
            Pen::at(0.45, 0.52).to(0.8, 0.52).optional(0.25),
        ]),
        // 8: two stacked loops, the lower one larger.
        t(vec![
            Pen::ellipse([0.5, 0.26], [0.21, 0.23]).stroke(),
            Pen::ellipse([0.5, 0.73], [0.26, 0.25]).stroke(),
        ]),
        // 9: a loop on a stem.
        t(vec![
            Pen::ellipse([0.47, 0.29], [0.24, 0.25]).stroke(),
            Pen::at(0.71, 0.3).to(0.68, 0.65).to(0.6, 0.98).stroke(),
        ]),
    ]
}

/// A stroke segment in pixel coordinates (pixel `(r, c)` has its centre at
/// `(c + 0.5, r + 0.5)`).
#[derive(Clone, Copy)]
struct Segment {
    a: [f32; 2],
    d: [f32; 2],
    /// 1 / |d|², or 0 for a degenerate segment (a dot).
    inv_len2: f32,
}

/// Ink of one example.
#[derive(Clone, Copy)]
struct Ink {
    half_width: f32,
    peak: f32,
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// Draws the example's distortions of `template` and writes its segments in
/// pixel coordinates into `out`; returns the ink to draw them with.
fn place(template: &Template, jitter: f32, rng: &mut ChaCha8Rng, out: &mut Vec<Segment>) -> Ink {
    // Affine jitter, all proportional to `a` (1 at the default jitter 0.5).
    let a = 2.0 * jitter;
    let angle = a * uniform(rng, -20.0, 20.0).to_radians();
    let scale = (a * uniform(rng, 0.8f32.ln(), 1.15f32.ln())).exp() * UNIT_PX;
    let aspect = (a * uniform(rng, -0.1, 0.1)).exp();
    let shear = a * uniform(rng, -0.2, 0.2);
    let shift = [a * uniform(rng, -3.0, 3.0), a * uniform(rng, -3.0, 3.0)];
    // M = rotation · shear · diag(sx, sy).
    let (sin, cos) = angle.sin_cos();
    let (sx, sy) = (scale * aspect, scale / aspect);
    let m = [
        [cos * sx, (cos * shear - sin) * sy],
        [sin * sx, (sin * shear + cos) * sy],
    ];
    let origin = [SIDE as f32 / 2.0 + shift[0], SIDE as f32 / 2.0 + shift[1]];

    // Handwriting variation, independent of `jitter`: a smooth displacement
    // field (three low-frequency plane waves per axis) bends the strokes.
    let mut waves = [[0f32; 3]; 3];
    for w in &mut waves {
        let dir = uniform(rng, 0.0, std::f32::consts::TAU);
        let freq = uniform(rng, 0.5, 1.5) * std::f32::consts::TAU;
        *w = [
            freq * dir.cos(),
            freq * dir.sin(),
            uniform(rng, 0.0, std::f32::consts::TAU),
        ];
    }
    let mut amps = [[0f32; 2]; 3];
    for amp in &mut amps {
        for v in amp.iter_mut() {
            *v = 0.025 * rng.sample::<f32, _>(StandardNormal);
        }
    }
    let ink = Ink {
        half_width: uniform(rng, 1.2, 2.8) / 2.0,
        peak: uniform(rng, 0.75, 1.0),
    };

    out.clear();
    for stroke in &template.strokes {
        if stroke.presence < 1.0 && rng.random::<f32>() >= stroke.presence {
            continue;
        }
        let offset = [
            0.02 * rng.sample::<f32, _>(StandardNormal),
            0.02 * rng.sample::<f32, _>(StandardNormal),
        ];
        let to_pixels = |p: [f32; 2]| {
            let mut q = [p[0] + offset[0] - 0.5, p[1] + offset[1] - 0.5];
            for (w, amp) in waves.iter().zip(&amps) {
                let s = (w[0] * p[0] + w[1] * p[1] + w[2]).sin();
                q[0] += amp[0] * s;
                q[1] += amp[1] * s;
            }
            [
                origin[0] + m[0][0] * q[0] + m[0][1] * q[1],
                origin[1] + m[1][0] * q[0] + m[1][1] * q[1],
            ]
        };
        let mut prev = to_pixels(stroke.points[0]);
        for &p in &stroke.points[1..] {
            let next = to_pixels(p);
            let d = [next[0] - prev[0], next[1] - prev[1]];
            let len2 = d[0] * d[0] + d[1] * d[1];
            out.push(Segment {
                a: prev,
                d,
                inv_len2: if len2 > 1e-12 { 1.0 / len2 } else { 0.0 },
            });
            prev = next;
        }
    }
    ink
}

/// Renders `segments` into `image`: each pixel's ink falls linearly from
/// `peak` to 0 over the last pixel before `half_width + 0.5` from the nearest
/// segment, a cheap anti-aliasing. Only pixels within reach of a segment's
/// bounding box are visited, so the cost follows the ink, not the image.
fn render(segments: &[Segment], ink: Ink, image: &mut [f32]) {
    let reach = ink.half_width + 0.5;
    // The image first holds squared distances to the nearest segment.
    image.fill(f32::INFINITY);
    let last = SIDE as i32 - 1;
    // Pixels whose centre c + 0.5 lies in [lo, hi].
    let range = |lo: f32, hi: f32| {
        let first = ((lo - 0.5).ceil() as i32).max(0);
        let end = ((hi - 0.5).floor() as i32).min(last);
        first..=end
    };
    for s in segments {
        let b = [s.a[0] + s.d[0], s.a[1] + s.d[1]];
        let cols = range(s.a[0].min(b[0]) - reach, s.a[0].max(b[0]) + reach);
        let rows = range(s.a[1].min(b[1]) - reach, s.a[1].max(b[1]) + reach);
        for r in rows {
            let py = r as f32 + 0.5 - s.a[1];
            let row = &mut image[r as usize * SIDE..(r as usize + 1) * SIDE];
            for c in cols.clone() {
                let px = c as f32 + 0.5 - s.a[0];
                let t = ((px * s.d[0] + py * s.d[1]) * s.inv_len2).clamp(0.0, 1.0);
                let (ex, ey) = (px - t * s.d[0], py - t * s.d[1]);
                let d2 = ex * ex + ey * ey;
                let cell = &mut row[c as usize];
                if d2 < *cell {
                    *cell = d2;
                }
            }
        }
    }
    for v in image.iter_mut() {
        *v = ink.peak * (reach - v.sqrt()).clamp(0.0, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spec(n_train: usize, n_heldout: usize, seed: u64) -> GlyphsSpec {
        GlyphsSpec {
            n_train,
            n_heldout,
            seed,
            ..GlyphsSpec::default()
        }
    }

    fn classes(s: &RawSplit) -> &[u32] {
        match &s.y {
            Targets::Classes(c) => c,
            Targets::Values { .. } => panic!("glyphs have class labels"),
        }
    }

    #[test]
    fn deterministic_shaped_and_valid() {
        let a = generate(&spec(30, 20, 3));
        a.check().unwrap();
        assert_eq!(a.name, "glyphs(seed=3)");
        assert_eq!(a.input_shape, [1, 28, 28]);
        assert_eq!((a.outputs, a.task), (10, Task::Classification));
        let h = a.heldout.as_ref().unwrap();
        assert_eq!((a.train.len(), h.len()), (30, 20));
        assert_eq!(a.train.x.len(), 30 * PIXELS);
        assert_eq!(a, generate(&spec(30, 20, 3)));
        assert_ne!(a.train.x, generate(&spec(30, 20, 4)).train.x);
        // An example does not depend on how many others were generated.
        let more = generate(&spec(40, 5, 3));
        assert_eq!(a.train.x[..], more.train.x[..30 * PIXELS]);
        assert_eq!(classes(&a.train), &classes(&more.train)[..30]);
        assert!(a.train.x.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn all_examples_differ_within_and_across_splits() {
        let d = generate(&spec(200, 100, 0));
        let h = d.heldout.as_ref().unwrap();
        let key = |img: &[f32]| img.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut seen = HashSet::new();
        for img in d.train.x.chunks(PIXELS).chain(h.x.chunks(PIXELS)) {
            assert!(seen.insert(key(img)), "two identical examples");
        }
        // Without noise the digits themselves still differ.
        let clean = generate(&GlyphsSpec {
            noise: 0.0,
            ..spec(40, 1, 0)
        });
        let labels = classes(&clean.train);
        let imgs: Vec<&[f32]> = clean.train.x.chunks(PIXELS).collect();
        for i in 0..imgs.len() {
            for j in i + 1..imgs.len() {
                if labels[i] == labels[j] {
                    assert_ne!(imgs[i], imgs[j], "examples {i} and {j}");
                }
            }
        }
    }

    #[test]
    fn classes_are_balanced() {
        let d = generate(&spec(503, 97, 1));
        for s in [&d.train, d.heldout.as_ref().unwrap()] {
            let mut counts = [0usize; CLASSES];
            for &c in classes(s) {
                counts[c as usize] += 1;
            }
            let expected = s.len() as f64 / CLASSES as f64;
            for (c, &k) in counts.iter().enumerate() {
                assert!(
                    (k as f64 - expected).abs() <= 0.2 * expected,
                    "class {c}: {k} of {}",
                    s.len()
                );
            }
        }
    }

    /// Heldout accuracy of the nearest class mean (in pixel space) fitted on
    /// the training split.
    fn nearest_mean_accuracy(d: &RawDataset) -> f64 {
        let mut means = vec![[0f64; PIXELS]; CLASSES];
        let mut counts = [0f64; CLASSES];
        for (img, &c) in d.train.x.chunks(PIXELS).zip(classes(&d.train)) {
            counts[c as usize] += 1.0;
            for (m, &v) in means[c as usize].iter_mut().zip(img) {
                *m += v as f64;
            }
        }
        for (m, n) in means.iter_mut().zip(counts) {
            m.iter_mut().for_each(|v| *v /= n);
        }
        let h = d.heldout.as_ref().unwrap();
        let correct =
            h.x.chunks(PIXELS)
                .zip(classes(h))
                .filter(|(img, &c)| {
                    let dist = |m: &[f64; PIXELS]| -> f64 {
                        m.iter()
                            .zip(img.iter())
                            .map(|(a, &b)| (a - b as f64).powi(2))
                            .sum()
                    };
                    let best = (0..CLASSES)
                        .min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b])))
                        .unwrap();
                    best == c as usize
                })
                .count();
        correct as f64 / h.len() as f64
    }

    #[test]
    fn learnable_but_not_trivial() {
        let acc = nearest_mean_accuracy(&generate(&spec(500, 200, 0)));
        assert!(acc > 0.3 && acc < 0.98, "nearest class mean accuracy {acc}");
    }

    fn ascii(img: &[f32]) -> String {
        img.chunks(SIDE)
            .map(|row| {
                row.iter()
                    .map(|&v| [' ', '.', ':', '+', '#'][((v * 5.0) as usize).min(4)])
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    /// A look at the digits: `cargo test -p ridgeline-worker --lib
    /// glyphs::tests::show -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints glyphs for a human to look at"]
    fn show() {
        let d = generate(&spec(20, 1, 0));
        let mut start = std::time::Instant::now();
        let full = generate(&GlyphsSpec::default());
        println!(
            "default set: {:?} ({} examples)",
            start.elapsed(),
            full.train.len() + 1000
        );
        start = std::time::Instant::now();
        println!(
            "nearest mean: {}",
            nearest_mean_accuracy(&generate(&spec(500, 200, 0)))
        );
        println!(
            "nearest mean (default set): {}",
            nearest_mean_accuracy(&full)
        );
        println!("({:?})", start.elapsed());
        for (img, c) in d.train.x.chunks(PIXELS).zip(classes(&d.train)).take(3) {
            println!("class {c}\n{}", ascii(img));
        }
        // Two rows of ten noiseless digits side by side.
        let clean = generate(&GlyphsSpec {
            noise: 0.0,
            ..spec(20, 1, 0)
        });
        for block in clean.train.x.chunks(10 * PIXELS) {
            let arts: Vec<String> = block.chunks(PIXELS).map(ascii).collect();
            for r in 0..SIDE {
                let line: Vec<&str> = arts
                    .iter()
                    .map(|a| a.lines().nth(r).unwrap_or(""))
                    .collect();
                println!("{}", line.join("|"));
            }
            println!();
        }
    }
}
