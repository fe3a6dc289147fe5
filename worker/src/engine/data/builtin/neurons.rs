//! Neurons: a regression task modelled on the procedure's own example,
//! predicting the responses of visual cortical neurons to images.
//!
//! Generative model:
//!
//! * **Stimuli** (one stream per example): natural-ish `S×S` images, the sum
//!   of 3–6 full-field sine gratings (random orientation and phase,
//!   frequency log-uniform from 1 cycle per image to `S/3`, so that each
//!   octave carries about equal energy, as the 1/f amplitude spectrum of
//!   natural images does), 1–3 Gaussian blobs and, half of the time, a soft
//!   edge; each image is normalised to zero mean and unit standard
//!   deviation.
//! * **Image features** (fixed per seed): a bank of Gabor filters at four
//!   orientations (offset by a random angle), two wavelengths (`S/4` and
//!   `S/2.5`) and a coarse grid of positions (spacing about one wavelength,
//!   slightly jittered). Each filter gives two features: a complex-cell
//!   energy `√(even² + odd²)` (phase invariant) and a simple-cell rectified
//!   response `max(even, 0)`.
//! * **Neurons** (fixed per seed, one stream per neuron): a receptive field
//!   at a random position with a preferred orientation and scale, i.e. a
//!   sparse readout of the features: weight 1 on the filter nearest that
//!   position with the preferred orientation and scale, plus 2–5 weaker
//!   inputs of either sign (facilitation, suppression) from filters nearby.
//!   The drive `w·features` is standardised with its mean and standard
//!   deviation over a calibration set of 512 stimuli, so responses are O(1)
//!   whatever the image size, and the response is
//!   `softplus(gain·drive + bias)` with gain in [1, 2] and bias in [-1, 0.5]
//!   (sparse, non-negative firing rates).
//! * **Noise**: Gaussian, with standard deviation `noise` times the neuron's
//!   response standard deviation over the calibration set: `noise` is
//!   relative, and the noise ceiling (the R² of the noiseless response) is
//!   about `1 / (1 + noise²)`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use ridgeline_common::spec::NeuronsSpec;
use ridgeline_common::Task;

use crate::engine::data::{RawDataset, RawSplit, Targets};
use crate::engine::rng;

/// Stimuli used to standardise each neuron's drive and measure its response
/// spread (their own stream, so they do not depend on the split sizes).
const CALIBRATION: usize = 512;
const ORIENTATIONS: usize = 4;
/// Filter wavelengths as fractions of the image side.
const WAVELENGTHS: [f32; 2] = [1.0 / 4.0, 1.0 / 2.5];
/// Features per filter: complex-cell energy and simple-cell rectification.
const PER_FILTER: usize = 2;

/// Generates the simulated neuron responses of `spec`: `[1, S, S]` images,
/// `neurons` real targets per image, both splits (see the module
/// documentation for the generative model).
pub fn generate(spec: &NeuronsSpec) -> RawDataset {
    let sim = Simulator::new(spec.seed, spec.image_size, spec.neurons);
    let split = |which: &str, n: usize| sim.split(spec, which, n);
    RawDataset {
        name: format!("neurons(seed={})", spec.seed),
        task: Task::Regression,
        input_shape: vec![1, spec.image_size, spec.image_size],
        outputs: spec.neurons,
        train: split("train", spec.n_train),
        heldout: Some(split("heldout", spec.n_heldout)),
    }
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// Writes a random stimulus into `image` (`size × size`, row-major).
fn stimulus(size: usize, rng: &mut ChaCha8Rng, image: &mut [f32]) {
    use std::f32::consts::{PI, TAU};
    let s = size as f32;
    image.fill(0.0);
    // Coordinates in pixels, from the image centre.
    let coords = |i: usize| {
        (
            (i % size) as f32 + 0.5 - s / 2.0,
            (i / size) as f32 + 0.5 - s / 2.0,
        )
    };
    for _ in 0..rng.random_range(3..=6) {
        let theta = uniform(rng, 0.0, PI);
        let cycles = (uniform(rng, 0.0, 1.0) * (s / 3.0).ln()).exp();
        let k = TAU * cycles / s;
        let (kx, ky) = (k * theta.cos(), k * theta.sin());
        let phase = uniform(rng, 0.0, TAU);
        let amp = uniform(rng, 0.3, 1.0);
        for (i, v) in image.iter_mut().enumerate() {
            let (x, y) = coords(i);
            *v += amp * (kx * x + ky * y + phase).cos();
        }
    }
    for _ in 0..rng.random_range(1..=3) {
        let (cx, cy) = (
            uniform(rng, -s / 2.0, s / 2.0),
            uniform(rng, -s / 2.0, s / 2.0),
        );
        let sigma = (uniform(rng, (s / 16.0).ln(), (s / 4.0).ln())).exp();
        let inv = 1.0 / (2.0 * sigma * sigma);
        let amp = 1.5 * rng.sample::<f32, _>(StandardNormal);
        for (i, v) in image.iter_mut().enumerate() {
            let (x, y) = coords(i);
            *v += amp * (-((x - cx).powi(2) + (y - cy).powi(2)) * inv).exp();
        }
    }
    if rng.random_bool(0.5) {
        let theta = uniform(rng, 0.0, TAU);
        let offset = uniform(rng, -s / 3.0, s / 3.0);
        let width = uniform(rng, 0.5, 2.0);
        let amp = uniform(rng, 0.5, 1.5);
        for (i, v) in image.iter_mut().enumerate() {
            let (x, y) = coords(i);
            *v += amp * ((x * theta.cos() + y * theta.sin() - offset) / width).tanh();
        }
    }
    let n = image.len() as f32;
    let mean = image.iter().sum::<f32>() / n;
    let var = image.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
    let scale = if var > 1e-12 { 1.0 / var.sqrt() } else { 1.0 };
    image.iter_mut().for_each(|v| *v = (*v - mean) * scale);
}

/// A quadrature pair of Gabor filters, stored over its window only (the
/// envelope is negligible beyond 2.5σ), so a response costs the window's
/// area rather than the image's.
struct Filter {
    x0: usize,
    y0: usize,
    width: usize,
    even: Vec<f32>,
    odd: Vec<f32>,
    centre: [f32; 2],
    orientation: usize,
    scale: usize,
}

impl Filter {
    /// (even, odd) responses to `image`.
    fn respond(&self, image: &[f32], size: usize) -> (f32, f32) {
        let (mut e, mut o) = (0f32, 0f32);
        for ((even, odd), r) in self
            .even
            .chunks_exact(self.width)
            .zip(self.odd.chunks_exact(self.width))
            .zip(self.y0..)
        {
            let row = &image[r * size + self.x0..r * size + self.x0 + self.width];
            for ((p, a), b) in row.iter().zip(even).zip(odd) {
                e += p * a;
                o += p * b;
            }
        }
        (e, o)
    }
}

/// The seed's filter bank, ordered by scale, orientation, position.
fn filter_bank(seed: u64, size: usize) -> Vec<Filter> {
    let mut rng = rng::stream(seed, "neurons/bank", 0);
    let s = size as f32;
    let angle0 = uniform(&mut rng, 0.0, std::f32::consts::PI / ORIENTATIONS as f32);
    let mut bank = Vec::new();
    for (scale, &fraction) in WAVELENGTHS.iter().enumerate() {
        let lambda = fraction * s;
        let sigma = 0.45 * lambda;
        let grid = ((s / lambda).round() as usize).max(2);
        let spacing = s / grid as f32;
        for orientation in 0..ORIENTATIONS {
            let angle = angle0 + orientation as f32 * std::f32::consts::PI / ORIENTATIONS as f32;
            let (sin, cos) = angle.sin_cos();
            for gy in 0..grid {
                for gx in 0..grid {
                    let cx = (gx as f32 + 0.5 + uniform(&mut rng, -0.15, 0.15)) * spacing;
                    let cy = (gy as f32 + 0.5 + uniform(&mut rng, -0.15, 0.15)) * spacing;
                    let reach = 2.5 * sigma;
                    let clip = |c: f32| (c.max(0.0) as usize).min(size - 1);
                    let (x0, x1) = (clip((cx - reach).floor()), clip((cx + reach).ceil()));
                    let (y0, y1) = (clip((cy - reach).floor()), clip((cy + reach).ceil()));
                    let width = x1 - x0 + 1;
                    let mut even = Vec::with_capacity(width * (y1 - y0 + 1));
                    let mut odd = Vec::with_capacity(even.capacity());
                    for y in y0..=y1 {
                        for x in x0..=x1 {
                            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                            let along = dx * cos + dy * sin;
                            let env = (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp();
                            let arg = std::f32::consts::TAU * along / lambda;
                            even.push(env * arg.cos());
                            odd.push(env * arg.sin());
                        }
                    }
                    // No response to uniform brightness, unit norm so that
                    // scales and clipped filters are comparable.
                    let mean = even.iter().sum::<f32>() / even.len() as f32;
                    even.iter_mut().for_each(|v| *v -= mean);
                    for w in [&mut even, &mut odd] {
                        let norm = w.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                        w.iter_mut().for_each(|v| *v /= norm);
                    }
                    bank.push(Filter {
                        x0,
                        y0,
                        width,
                        even,
                        odd,
                        centre: [cx, cy],
                        orientation,
                        scale,
                    });
                }
            }
        }
    }
    bank
}

/// One simulated neuron.
struct Neuron {
    /// Sparse readout: (feature index, weight).
    inputs: Vec<(usize, f32)>,
    /// Standardisation of the drive, from the calibration set.
    drive_mean: f64,
    drive_std: f64,
    gain: f64,
    bias: f64,
    /// Standard deviation of the response noise.
    noise_std: f64,
}

impl Neuron {
    /// A neuron wired to `bank`, not yet calibrated.
    fn wire(bank: &[Filter], size: usize, rng: &mut ChaCha8Rng) -> Neuron {
        let s = size as f32;
        let centre = [
            uniform(rng, 0.2 * s, 0.8 * s),
            uniform(rng, 0.2 * s, 0.8 * s),
        ];
        let dist2 =
            |f: &Filter| (f.centre[0] - centre[0]).powi(2) + (f.centre[1] - centre[1]).powi(2);
        let orientation = rng.random_range(0..ORIENTATIONS);
        let scale = rng.random_range(0..WAVELENGTHS.len());
        let main = (0..bank.len())
            .filter(|&i| bank[i].orientation == orientation && bank[i].scale == scale)
            .min_by(|&a, &b| dist2(&bank[a]).total_cmp(&dist2(&bank[b])))
            .expect("every orientation and scale has filters");
        // Complex cells are the commoner kind of input.
        let kind = |rng: &mut ChaCha8Rng| usize::from(rng.random_bool(0.4));
        let mut inputs = vec![(main * PER_FILTER + kind(rng), 1.0)];
        let nearby: Vec<usize> = (0..bank.len())
            .filter(|&i| i != main && dist2(&bank[i]) <= (0.3 * s).powi(2))
            .collect();
        for _ in 0..rng.random_range(2..=5) {
            // Filters are never too sparse to find a neighbour (the grid
            // spacing is at most 0.5 S), but fall back to any filter.
            let f = if nearby.is_empty() {
                rng.random_range(0..bank.len())
            } else {
                nearby[rng.random_range(0..nearby.len())]
            };
            let w = uniform(rng, 0.2, 0.6) * if rng.random_bool(0.6) { 1.0 } else { -1.0 };
            inputs.push((f * PER_FILTER + kind(rng), w));
        }
        Neuron {
            inputs,
            drive_mean: 0.0,
            drive_std: 1.0,
            gain: uniform(rng, 1.0, 2.0) as f64,
            bias: uniform(rng, -1.0, 0.5) as f64,
            noise_std: 0.0,
        }
    }

    fn drive(&self, features: &[f32]) -> f64 {
        self.inputs
            .iter()
            .map(|&(i, w)| (w * features[i]) as f64)
            .sum()
    }

    /// Noiseless response to an image with these `features`.
    fn respond(&self, features: &[f32]) -> f64 {
        let z = (self.drive(features) - self.drive_mean) / self.drive_std;
        softplus(self.gain * z + self.bias)
    }
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Mean and standard deviation (population), in f64.
fn mean_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count().max(1) as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The fixed part of the model: filters and calibrated neurons.
struct Simulator {
    size: usize,
    bank: Vec<Filter>,
    neurons: Vec<Neuron>,
}

impl Simulator {
    fn new(seed: u64, size: usize, neurons: usize) -> Simulator {
        let bank = filter_bank(seed, size);
        // One stream per neuron: neuron j is the same whatever the count.
        let neurons = (0..neurons)
            .map(|j| {
                Neuron::wire(
                    &bank,
                    size,
                    &mut rng::stream(seed, "neurons/neuron", j as u64),
                )
            })
            .collect();
        let mut sim = Simulator {
            size,
            bank,
            neurons,
        };

        let mut image = vec![0f32; size * size];
        let nf = sim.feature_count();
        let mut features = vec![0f32; CALIBRATION * nf];
        for (j, f) in features.chunks_exact_mut(nf).enumerate() {
            stimulus(
                size,
                &mut rng::stream(seed, "neurons/calibration", j as u64),
                &mut image,
            );
            sim.features(&image, f);
        }
        for neuron in &mut sim.neurons {
            let (mean, std) = mean_std(features.chunks_exact(nf).map(|f| neuron.drive(f)));
            neuron.drive_mean = mean;
            // A neuron whose inputs never vary is constant; std 1 avoids a
            // division by zero and its noise then keeps the target non-constant.
            neuron.drive_std = if std > 1e-9 { std } else { 1.0 };
            let (_, response_std) = mean_std(features.chunks_exact(nf).map(|f| neuron.respond(f)));
            neuron.noise_std = response_std;
        }
        sim
    }

    fn feature_count(&self) -> usize {
        self.bank.len() * PER_FILTER
    }

    fn features(&self, image: &[f32], out: &mut [f32]) {
        for (filter, out) in self.bank.iter().zip(out.chunks_exact_mut(PER_FILTER)) {
            let (e, o) = filter.respond(image, self.size);
            out[0] = (e * e + o * o).sqrt();
            out[1] = e.max(0.0);
        }
    }

    /// Noiseless responses of every neuron to `image`; `features` is scratch.
    fn respond(&self, image: &[f32], features: &mut [f32], out: &mut [f32]) {
        self.features(image, features);
        for (neuron, out) in self.neurons.iter().zip(out) {
            *out = neuron.respond(features) as f32;
        }
    }

    fn split(&self, spec: &NeuronsSpec, which: &str, n: usize) -> RawSplit {
        let purpose = format!("neurons/{which}");
        let (pixels, width) = (self.size * self.size, self.neurons.len());
        let mut x = vec![0f32; n * pixels];
        let mut y = vec![0f32; n * width];
        let mut features = vec![0f32; self.feature_count()];
        for (i, (image, targets)) in x
            .chunks_exact_mut(pixels)
            .zip(y.chunks_exact_mut(width))
            .enumerate()
        {
            let mut rng = rng::stream(spec.seed, &purpose, i as u64);
            stimulus(self.size, &mut rng, image);
            self.respond(image, &mut features, targets);
            for (t, neuron) in targets.iter_mut().zip(&self.neurons) {
                let z: f64 = rng.sample(StandardNormal);
                *t += (spec.noise * neuron.noise_std * z) as f32;
            }
        }
        RawSplit {
            x,
            y: Targets::Values { data: y, width },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spec(n_train: usize, n_heldout: usize, seed: u64) -> NeuronsSpec {
        NeuronsSpec {
            n_train,
            n_heldout,
            seed,
            ..NeuronsSpec::default()
        }
    }

    fn values(s: &RawSplit) -> &[f32] {
        match &s.y {
            Targets::Values { data, .. } => data,
            Targets::Classes(_) => panic!("neurons have real targets"),
        }
    }

    #[test]
    fn deterministic_shaped_and_valid() {
        let a = generate(&spec(40, 20, 5));
        a.check().unwrap();
        assert_eq!(a.name, "neurons(seed=5)");
        assert_eq!(a.input_shape, [1, 16, 16]);
        assert_eq!((a.outputs, a.task), (8, Task::Regression));
        let h = a.heldout.as_ref().unwrap();
        assert_eq!((a.train.len(), h.len()), (40, 20));
        assert_eq!(a, generate(&spec(40, 20, 5)));
        let b = generate(&spec(40, 20, 6));
        assert_ne!(a.train.x, b.train.x);
        assert_ne!(values(&a.train), values(&b.train));
        // An example does not depend on how many others were generated, and
        // neuron j not on how many neurons there are.
        let c = generate(&NeuronsSpec {
            neurons: 3,
            ..spec(45, 1, 5)
        });
        assert_eq!(a.train.x[..], c.train.x[..40 * 256]);
        for i in 0..40 {
            assert_eq!(
                values(&a.train)[i * 8..i * 8 + 3],
                values(&c.train)[i * 3..i * 3 + 3]
            );
        }

        let key = |r: &[f32]| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut seen = HashSet::new();
        for r in a.train.x.chunks(256).chain(h.x.chunks(256)) {
            assert!(seen.insert(key(r)), "two identical images");
        }
    }

    #[test]
    fn other_sizes_are_valid() {
        for size in [8, 23, 32] {
            let d = generate(&NeuronsSpec {
                image_size: size,
                neurons: 2,
                ..spec(10, 5, 1)
            });
            d.check().unwrap();
            assert_eq!(d.input_shape, [1, size, size]);
        }
    }

    /// Per neuron: variance of the noisy targets, and R² of the noiseless
    /// response (recomputed from the stored image) as a prediction of them.
    fn oracle(s: &NeuronsSpec, split: &RawSplit) -> Vec<(f64, f64)> {
        let sim = Simulator::new(s.seed, s.image_size, s.neurons);
        let width = s.neurons;
        let mut features = vec![0f32; sim.feature_count()];
        let mut clean = vec![0f32; split.len() * width];
        for (img, out) in split
            .x
            .chunks(s.image_size.pow(2))
            .zip(clean.chunks_mut(width))
        {
            sim.respond(img, &mut features, out);
        }
        let noisy = values(split);
        (0..width)
            .map(|j| {
                let col = |v: &[f32]| v.chunks(width).map(|r| r[j] as f64).collect::<Vec<_>>();
                let (y, f) = (col(noisy), col(&clean));
                let (_, std) = mean_std(y.iter().copied());
                let sse: f64 = y.iter().zip(&f).map(|(y, f)| (y - f).powi(2)).sum();
                let var = std * std;
                (var, 1.0 - sse / (var * y.len() as f64))
            })
            .collect()
    }

    #[test]
    fn responses_follow_the_images() {
        let s = spec(10, 400, 0);
        let d = generate(&s);
        let h = d.heldout.as_ref().unwrap();
        assert!(values(h).iter().all(|v| v.is_finite()));
        for (j, (var, r2)) in oracle(&s, h).into_iter().enumerate() {
            assert!(var > 1e-3, "neuron {j}: variance {var}");
            assert!(r2 > 0.6 && r2 < 0.99, "neuron {j}: oracle R² {r2}");
        }
        // Without noise the oracle is exact.
        let s = NeuronsSpec { noise: 0.0, ..s };
        let d = generate(&s);
        for (j, (_, r2)) in oracle(&s, d.heldout.as_ref().unwrap())
            .into_iter()
            .enumerate()
        {
            assert!(r2 > 0.9999, "neuron {j}: noiseless oracle R² {r2}");
        }
    }

    /// Mean heldout R² over neurons of ridge regression from `phi(image)`.
    fn ridge_r2(d: &RawDataset, phi: &dyn Fn(&[f32]) -> Vec<f64>) -> f64 {
        let el = d.example_len();
        let w = d.outputs;
        let h = d.heldout.as_ref().unwrap();
        let rows = |s: &RawSplit| s.x.chunks(el).map(phi).collect::<Vec<_>>();
        let (xt, xh) = (rows(&d.train), rows(h));
        let p = xt[0].len() + 1;
        let mut a = vec![vec![0f64; p + w]; p];
        for (x, y) in xt.iter().zip(values(&d.train).chunks(w)) {
            let x: Vec<f64> = x.iter().copied().chain([1.0]).collect();
            for i in 0..p {
                for j in 0..p {
                    a[i][j] += x[i] * x[j];
                }
                for k in 0..w {
                    a[i][p + k] += x[i] * y[k] as f64;
                }
            }
        }
        for i in 0..p {
            a[i][i] += 1.0;
            let lead = a[i][i];
            a[i].iter_mut().for_each(|v| *v /= lead);
            let pivot = a[i].clone();
            for (k, row) in a.iter_mut().enumerate() {
                if k != i {
                    let f = row[i];
                    row.iter_mut().zip(&pivot).for_each(|(v, q)| *v -= f * q);
                }
            }
        }
        let mut total = 0.0;
        for k in 0..w {
            let y: Vec<f64> = values(h).chunks(w).map(|r| r[k] as f64).collect();
            let (_, std) = mean_std(y.iter().copied());
            let sse: f64 = xh
                .iter()
                .zip(&y)
                .map(|(x, y)| {
                    let f: f64 = x
                        .iter()
                        .chain([&1.0])
                        .zip(&a)
                        .map(|(x, r)| x * r[p + k])
                        .sum();
                    (y - f).powi(2)
                })
                .sum();
            total += 1.0 - sse / (std * std * y.len() as f64);
        }
        total / w as f64
    }

    /// Heldout R² of ridge regression on the pixels, and on the features of
    /// another seed's filter bank: the right kind of computation with other
    /// filters, roughly what a CNN can learn.
    fn linear_readouts(d: &RawDataset, seed: u64) -> (f64, f64) {
        let size = d.input_shape[1];
        let pixels = ridge_r2(d, &|x| x.iter().map(|&v| v as f64).collect());
        let other = Simulator::new(seed + 1, size, 1);
        let energy = ridge_r2(d, &|x| {
            let mut f = vec![0f32; other.feature_count()];
            other.features(x, &mut f);
            f.iter().map(|&v| v as f64).collect()
        });
        (pixels, energy)
    }

    #[test]
    fn learnable_but_not_linear_in_pixels() {
        let d = generate(&spec(1000, 300, 0));
        let (pixels, energy) = linear_readouts(&d, 0);
        println!("ridge R²: pixels {pixels:.3}, filter energies {energy:.3}");
        assert!(energy > 0.3, "R² from filter energies {energy}");
        assert!(
            pixels < energy - 0.2,
            "R² from pixels {pixels}, from filter energies {energy}"
        );
    }

    #[test]
    #[ignore = "prints statistics for a human to look at"]
    fn show() {
        let s = NeuronsSpec::default();
        let start = std::time::Instant::now();
        let d = generate(&s);
        println!("default set generated in {:?}", start.elapsed());
        let h = d.heldout.as_ref().unwrap();
        for (j, (var, r2)) in oracle(&s, h).into_iter().enumerate() {
            let col: Vec<f64> = values(h).chunks(s.neurons).map(|r| r[j] as f64).collect();
            let (mean, _) = mean_std(col.iter().copied());
            let max = col.iter().copied().fold(f64::MIN, f64::max);
            println!("neuron {j}: mean {mean:.3}, var {var:.3}, max {max:.3}, oracle R² {r2:.3}");
        }
        let (pixels, energy) = linear_readouts(&d, s.seed);
        println!("ridge R²: pixels {pixels:.3}, another bank's features {energy:.3}");
    }
}
