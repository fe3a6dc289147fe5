//! Tabular: a classification task with non-linear class structure, in the
//! spirit of scikit-learn's `make_classification`.
//!
//! Generative model. Fixed per seed (stream `tabular/model`):
//!
//! * `classes × clusters_per_class` cluster centres in the first
//!   `informative` dimensions, at distinct vertices of the hypercube
//!   `{-class_sep, +class_sep}^informative` (nudged by ±10 % of `class_sep`
//!   so the layout is not perfectly symmetric), dealt out to the classes:
//!   of 64 random deals, the one whose class means lie closest together.
//!   A class is thus a few far-apart clusters interleaved with those of the
//!   other classes: its mean says little about it (a linear model does
//!   poorly), while the clusters themselves are easy to tell apart (a small
//!   MLP does well).
//! * Per cluster, a random linear distortion `A = I + G` (`G` Gaussian,
//!   moving a typical unit vector by about 0.6) giving each cluster its own
//!   elongated, sheared shape.
//! * A random orthogonal mix of all `features` dimensions, followed by
//!   per-feature scales (log-normal) and offsets, so that no single input
//!   column is informative on its own and inputs are not standardised.
//!
//! Per example (its own stream): the class (exactly balanced in blocks of
//! `classes`), a cluster of that class uniformly, `z ~ N(0, I)`, informative
//! coordinates `centre + A·z`, the rest pure noise `N(0, 1)`, then the mix.
//! With probability 1 % the label is replaced by a uniformly drawn class, as
//! real labels are noisy.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use ridgeline_common::spec::TabularSpec;
use ridgeline_common::Task;

use crate::engine::data::{RawDataset, RawSplit, Targets};
use crate::engine::rng;

/// Probability that an example's label is replaced by a random class.
const LABEL_NOISE: f64 = 0.01;

/// Generates the tabular dataset of `spec`: `[features]` inputs, `classes`
/// classes, both splits (see the module documentation for the model).
pub fn generate(spec: &TabularSpec) -> RawDataset {
    let model = Model::new(spec);
    RawDataset {
        name: format!("tabular(seed={})", spec.seed),
        task: Task::Classification,
        input_shape: vec![spec.features],
        outputs: spec.classes,
        train: model.split(spec, "train", spec.n_train),
        heldout: Some(model.split(spec, "heldout", spec.n_heldout)),
    }
}

/// The fixed part of the generative model.
struct Model {
    /// Cluster centres over the informative dimensions, by cluster.
    centres: Vec<Vec<f64>>,
    /// Per cluster, its `informative × informative` distortion, row-major.
    distortions: Vec<Vec<f64>>,
    /// `features × features` mixing matrix, row-major (scales included).
    mix: Vec<f64>,
    offsets: Vec<f64>,
    /// Class of each cluster.
    class_of: Vec<usize>,
    /// Clusters of each class.
    clusters_of: Vec<Vec<usize>>,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

impl Model {
    fn new(spec: &TabularSpec) -> Model {
        let mut rng = rng::stream(spec.seed, "tabular/model", 0);
        let (k, d) = (spec.classes * spec.clusters_per_class, spec.informative);
        let sep = spec.class_sep;

        // Distinct hypercube vertices as long as there are enough of them
        // (2^d ≥ k); beyond that, repeats are unavoidable and the classes
        // overlap, which is what such a spec asks for.
        let distinct = d >= usize::BITS as usize - 1 || (1usize << d) >= k;
        let mut signs: Vec<Vec<bool>> = Vec::with_capacity(k);
        while signs.len() < k {
            let v: Vec<bool> = (0..d).map(|_| rng.random()).collect();
            if !distinct || !signs.contains(&v) {
                signs.push(v);
            }
        }
        let centres: Vec<Vec<f64>> = signs
            .iter()
            .map(|v| {
                v.iter()
                    .map(|&s| {
                        sep * (if s { 1.0 } else { -1.0 }) + 0.1 * sep * rng.random_range(-1.0..1.0)
                    })
                    .collect()
            })
            .collect();

        // A = I + G with G's entries N(0, 0.36 / d), so |G v| ≈ 0.6 for a
        // unit v: clusters are clearly stretched and sheared, yet mostly
        // stay full-dimensional blobs of about unit size.
        let g = 0.6 / (d as f64).sqrt();
        let distortions = (0..k)
            .map(|_| {
                (0..d * d)
                    .map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 } + g * normal(&mut rng))
                    .collect()
            })
            .collect();

        // Clusters are dealt to classes round-robin after a shuffle, so each
        // class has exactly `clusters_per_class`. Of a number of shuffles,
        // the one whose class means lie closest together is kept: a purely
        // random deal often leaves one class off to a side, which a linear
        // model exploits; this keeps the classes interleaved for every seed.
        let mut order: Vec<usize> = (0..k).collect();
        let mut best = (f64::INFINITY, order.clone());
        for _ in 0..DEALS {
            order.shuffle(&mut rng);
            let spread = class_mean_spread(&centres, &order, spec.classes);
            if spread < best.0 {
                best = (spread, order.clone());
            }
        }
        let order = best.1;
        let mut class_of = vec![0; k];
        let mut clusters_of = vec![Vec::new(); spec.classes];
        for (j, &cluster) in order.iter().enumerate() {
            class_of[cluster] = j % spec.classes;
            clusters_of[j % spec.classes].push(cluster);
        }

        let f = spec.features;
        let q = random_orthogonal(f, &mut rng);
        let scales: Vec<f64> = (0..f).map(|_| (0.5 * normal(&mut rng)).exp()).collect();
        let mix = (0..f * f).map(|i| scales[i / f] * q[i]).collect();
        let offsets = (0..f).map(|_| normal(&mut rng)).collect();
        Model {
            centres,
            distortions,
            mix,
            offsets,
            class_of,
            clusters_of,
        }
    }

    fn split(&self, spec: &TabularSpec, which: &str, n: usize) -> RawSplit {
        let purpose = format!("tabular/{which}");
        let label_purpose = format!("tabular/{which}/labels");
        let (f, d) = (spec.features, spec.informative);
        let mut x = vec![0f32; n * f];
        let mut labels = Vec::with_capacity(n);
        let mut z = vec![0f64; f];
        let mut latent = vec![0f64; f];
        for (i, row) in x.chunks_exact_mut(f).enumerate() {
            let class = balanced_class(spec.seed, &label_purpose, i, spec.classes);
            let mut rng = rng::stream(spec.seed, &purpose, i as u64);
            let clusters = &self.clusters_of[class];
            let cluster = clusters[rng.random_range(0..clusters.len())];
            z.iter_mut().for_each(|v| *v = normal(&mut rng));
            let a = &self.distortions[cluster];
            for (r, l) in latent[..d].iter_mut().enumerate() {
                let az: f64 = a[r * d..(r + 1) * d]
                    .iter()
                    .zip(&z[..d])
                    .map(|(a, z)| a * z)
                    .sum();
                *l = self.centres[cluster][r] + az;
            }
            latent[d..].copy_from_slice(&z[d..]);
            for (r, out) in row.iter_mut().enumerate() {
                let m = &self.mix[r * f..(r + 1) * f];
                let v: f64 = m.iter().zip(&latent).map(|(m, l)| m * l).sum();
                *out = (v + self.offsets[r]) as f32;
            }
            let label = if rng.random_bool(LABEL_NOISE) {
                rng.random_range(0..spec.classes)
            } else {
                self.class_of[cluster]
            };
            labels.push(label as u32);
        }
        RawSplit {
            x,
            y: Targets::Classes(labels),
        }
    }
}

/// Number of random deals of clusters to classes among which the most
/// interleaved is kept.
const DEALS: usize = 64;

/// Sum over classes of the squared distance of the class mean (of its
/// cluster centres) to the mean of all centres, when cluster `order[j]` goes
/// to class `j % classes`.
fn class_mean_spread(centres: &[Vec<f64>], order: &[usize], classes: usize) -> f64 {
    let d = centres[0].len();
    let mut sums = vec![vec![0f64; d]; classes];
    let mut all = vec![0f64; d];
    for (j, &cluster) in order.iter().enumerate() {
        for (r, &v) in centres[cluster].iter().enumerate() {
            sums[j % classes][r] += v;
            all[r] += v;
        }
    }
    let per_class = (order.len() / classes) as f64;
    let k = order.len() as f64;
    sums.iter()
        .map(|s| {
            s.iter()
                .zip(&all)
                .map(|(s, a)| (s / per_class - a / k).powi(2))
                .sum::<f64>()
        })
        .sum()
}

/// Class of example `i`: every block of `classes` consecutive examples holds
/// each class once, in an order drawn from the block's own stream, so
/// classes are balanced and the label depends on `i` alone.
fn balanced_class(seed: u64, purpose: &str, i: usize, classes: usize) -> usize {
    let mut order: Vec<usize> = (0..classes).collect();
    order.shuffle(&mut rng::stream(seed, purpose, (i / classes) as u64));
    order[i % classes]
}

/// A random `n × n` orthogonal matrix, row-major: Gram–Schmidt on Gaussian
/// rows (an orthogonal mix keeps the problem well-conditioned, unlike a raw
/// Gaussian matrix).
fn random_orthogonal(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut q: Vec<f64> = Vec::with_capacity(n * n);
    while q.len() < n * n {
        let mut v: Vec<f64> = (0..n).map(|_| normal(rng)).collect();
        // Twice, for numerical orthogonality.
        for _ in 0..2 {
            for row in q.chunks_exact(n) {
                let dot: f64 = row.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(row).for_each(|(v, r)| *v -= dot * r);
            }
        }
        let norm = v.iter().map(|v| v * v).sum::<f64>().sqrt();
        // A draw (numerically) in the span of the previous rows is redrawn.
        if norm > 1e-6 {
            q.extend(v.iter().map(|v| v / norm));
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spec(n_train: usize, n_heldout: usize, seed: u64) -> TabularSpec {
        TabularSpec {
            n_train,
            n_heldout,
            seed,
            ..TabularSpec::default()
        }
    }

    fn classes(s: &RawSplit) -> &[u32] {
        match &s.y {
            Targets::Classes(c) => c,
            Targets::Values { .. } => panic!("tabular has class labels"),
        }
    }

    #[test]
    fn deterministic_shaped_and_valid() {
        let a = generate(&spec(50, 20, 2));
        a.check().unwrap();
        assert_eq!(a.name, "tabular(seed=2)");
        assert_eq!(a.input_shape, [16]);
        assert_eq!((a.outputs, a.task), (4, Task::Classification));
        let h = a.heldout.as_ref().unwrap();
        assert_eq!((a.train.len(), h.len(), a.train.x.len()), (50, 20, 50 * 16));
        assert_eq!(a, generate(&spec(50, 20, 2)));
        let b = generate(&spec(50, 20, 3));
        assert_ne!(a.train.x, b.train.x);
        // An example does not depend on how many others were generated.
        assert_eq!(a.train.x[..], generate(&spec(60, 1, 2)).train.x[..50 * 16]);

        let key = |r: &[f32]| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut seen = HashSet::new();
        for r in a.train.x.chunks(16).chain(h.x.chunks(16)) {
            assert!(seen.insert(key(r)), "two identical examples");
        }
    }

    #[test]
    fn odd_shapes_are_valid() {
        for s in [
            TabularSpec {
                features: 2,
                informative: 1,
                classes: 3,
                clusters_per_class: 2,
                ..spec(20, 10, 0)
            },
            TabularSpec {
                features: 70,
                informative: 70,
                classes: 2,
                clusters_per_class: 1,
                ..spec(20, 10, 0)
            },
        ] {
            let d = generate(&s);
            d.check().unwrap();
            assert_eq!(d.train.x.len(), 20 * s.features);
        }
    }

    /// Heldout accuracies of a nearest-class-mean classifier and of 5-nearest
    /// neighbours, both fitted on the training split.
    fn accuracies(d: &RawDataset) -> (f64, f64) {
        let f = d.input_shape[0];
        let c = d.outputs;
        let (xt, yt) = (&d.train.x, classes(&d.train));
        let h = d.heldout.as_ref().unwrap();
        // Standardise with training statistics, as the engine would.
        let n = yt.len() as f64;
        let mean: Vec<f64> = (0..f)
            .map(|j| xt.chunks(f).map(|r| r[j] as f64).sum::<f64>() / n)
            .collect();
        let std: Vec<f64> = (0..f)
            .map(|j| {
                (xt.chunks(f)
                    .map(|r| (r[j] as f64 - mean[j]).powi(2))
                    .sum::<f64>()
                    / n)
                    .sqrt()
            })
            .collect();
        let norm = |x: &[f32]| -> Vec<Vec<f64>> {
            x.chunks(f)
                .map(|r| (0..f).map(|j| (r[j] as f64 - mean[j]) / std[j]).collect())
                .collect()
        };
        let (train, heldout) = (norm(xt), norm(&h.x));
        let dist =
            |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| (a - b).powi(2)).sum::<f64>();

        let mut means = vec![vec![0f64; f]; c];
        let mut counts = vec![0f64; c];
        for (r, &l) in train.iter().zip(yt) {
            counts[l as usize] += 1.0;
            means[l as usize]
                .iter_mut()
                .zip(r)
                .for_each(|(m, v)| *m += v);
        }
        for (m, k) in means.iter_mut().zip(&counts) {
            m.iter_mut().for_each(|v| *v /= k);
        }
        let mut ncm = 0;
        let mut knn = 0;
        for (r, &l) in heldout.iter().zip(classes(h)) {
            let best = (0..c).min_by(|&a, &b| dist(r, &means[a]).total_cmp(&dist(r, &means[b])));
            ncm += usize::from(best == Some(l as usize));
            let mut near: Vec<(f64, u32)> = train
                .iter()
                .zip(yt)
                .map(|(t, &y)| (dist(r, t), y))
                .collect();
            near.select_nth_unstable_by(4, |a, b| a.0.total_cmp(&b.0));
            let mut votes = vec![0; c];
            near[..5].iter().for_each(|&(_, y)| votes[y as usize] += 1);
            let vote = (0..c).max_by_key(|&k| votes[k]);
            knn += usize::from(vote == Some(l as usize));
        }
        let m = heldout.len() as f64;
        (ncm as f64 / m, knn as f64 / m)
    }

    /// Heldout accuracy of one-vs-rest linear least squares (with an
    /// intercept), fitted on the training split: the best a linear model does
    /// without iterative training.
    fn least_squares_accuracy(d: &RawDataset) -> f64 {
        let f = d.input_shape[0];
        let (c, p) = (d.outputs, f + 1);
        let row = |r: &[f32]| -> Vec<f64> { r.iter().map(|&v| v as f64).chain([1.0]).collect() };
        // Normal equations [XᵀX | XᵀY], solved by Gauss–Jordan elimination.
        let mut a = vec![vec![0f64; p + c]; p];
        for (r, &l) in d.train.x.chunks(f).zip(classes(&d.train)) {
            let x = row(r);
            for i in 0..p {
                for j in 0..p {
                    a[i][j] += x[i] * x[j];
                }
                a[i][p + l as usize] += x[i];
            }
        }
        for i in 0..p {
            a[i][i] += 1e-6;
            let pivot = (i..p)
                .max_by(|&x, &y| a[x][i].abs().total_cmp(&a[y][i].abs()))
                .unwrap();
            a.swap(i, pivot);
            let lead = a[i][i];
            a[i].iter_mut().for_each(|v| *v /= lead);
            for k in 0..p {
                if k != i {
                    let factor = a[k][i];
                    let pivot_row = a[i].clone();
                    a[k].iter_mut()
                        .zip(&pivot_row)
                        .for_each(|(v, w)| *v -= factor * w);
                }
            }
        }
        let h = d.heldout.as_ref().unwrap();
        let correct =
            h.x.chunks(f)
                .zip(classes(h))
                .filter(|(r, &l)| {
                    let x = row(r);
                    let score = |k: usize| (0..p).map(|i| x[i] * a[i][p + k]).sum::<f64>();
                    (0..c).max_by(|&u, &v| score(u).total_cmp(&score(v))) == Some(l as usize)
                })
                .count();
        correct as f64 / h.len() as f64
    }

    #[test]
    fn nonlinear_structure() {
        let d = generate(&spec(1000, 300, 0));
        let (ncm, knn) = accuracies(&d);
        // Chance is 0.25. The class means carry some information, but the
        // classes are far from linearly separable, while a local
        // (non-linear) classifier does much better.
        assert!(ncm > 0.3 && ncm < 0.75, "nearest class mean {ncm}");
        assert!(
            knn > 0.75 && knn > ncm + 0.2,
            "5-NN {knn}, nearest mean {ncm}"
        );
        let lsq = least_squares_accuracy(&d);
        assert!(lsq > 0.3 && lsq < 0.75, "least squares {lsq}");
    }

    #[test]
    #[ignore = "prints accuracies for a human to look at"]
    fn show() {
        for seed in 0..5 {
            let start = std::time::Instant::now();
            let d = generate(&spec(2000, 500, seed));
            let t = start.elapsed();
            let (ncm, knn) = accuracies(&d);
            let lsq = least_squares_accuracy(&d);
            println!("seed {seed}: nearest mean {ncm}, least squares {lsq}, 5-NN {knn} (generated in {t:?})");
        }
    }
}
