//! Step 2 (and each variant's own ramp in step 6): the learning rate from
//! an LR ramp.
//!
//! The LR is chosen by the ramp rule of [`super::ramp`] (steady region
//! before the cliff, steepest rise per decade of LR inside it, measured as the
//! share of the gap to 1 closed for a metric with that ceiling). As a second
//! opinion, fastai's three LR-finder rules ([`super::fastai`]) are applied
//! to the mean heldout loss of the same epochs (before any divergence).
//!
//! The choice is **weak** when the ramp rule says so (the rise is less than
//! 3× the noise, or the ramp never reached the cliff), or when the median
//! of fastai's suggestions is more than `fastai_ratio` (10×) away from our
//! LR in either direction. It is **undetermined** when no LR can be chosen
//! (no usable epochs, or no rise above the noise); `lr` is then `None`.

use serde::{Deserialize, Serialize};

use super::common::{fmt_num, median, Confidence};
use super::fastai::{fastai_suggestions, FastaiSuggestions};
use super::ramp::{analyze_ramp, describe, RampAnalysis, RampInput, RampOptions};

/// A value range on the ramp's axis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub lo: f64,
    pub hi: f64,
}

/// Disagreement with fastai beyond this factor makes the choice weak.
pub const FASTAI_DISAGREEMENT: f64 = 10.0;

/// The LR decision with its numbers and Thoughts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrDecision {
    /// The chosen learning rate (`None` when undetermined).
    pub lr: Option<f64>,
    /// The steady region's bounds.
    pub region: Option<Bounds>,
    /// The LR at the cliff (fall or divergence), if the ramp reached it.
    pub cliff_lr: Option<f64>,
    pub confidence: Confidence,
    /// Why the decision is weak or undetermined.
    pub reasons: Vec<String>,
    /// fastai's suggestions on the heldout loss (`None` without losses).
    pub fastai: Option<FastaiSuggestions>,
    /// max(ours/median, median/ours) for the median fastai suggestion.
    pub fastai_ratio: Option<f64>,
    pub analysis: RampAnalysis,
    /// One plain-English paragraph (without the "Thoughts:" label).
    pub thoughts: String,
}

/// Chooses the learning rate from an LR ramp (see the module docs).
/// `opts` is usually [`RampOptions::lr`].
pub fn choose_lr(input: &RampInput, opts: &RampOptions) -> LrDecision {
    let analysis = analyze_ramp(input, opts);
    let mut reasons = analysis.reasons.clone();
    let mut confidence = analysis.confidence;
    let lr = analysis.chosen.map(|c| c.x);

    // fastai on the mean heldout loss of the usable epochs.
    let usable = analysis.usable_points;
    let fastai = if input.loss.len() == input.metric.len() && !input.loss.is_empty() {
        let mean_loss: Vec<f64> = (0..usable)
            .map(|i| {
                let c: Vec<f64> = input
                    .loss
                    .iter()
                    .map(|l| l.get(i).copied().unwrap_or(f64::NAN))
                    .collect();
                c.iter().sum::<f64>() / c.len() as f64
            })
            .collect();
        fastai_suggestions(&input.x[..usable], &mean_loss, input.x.len())
    } else {
        None
    };
    let fastai_median = fastai.as_ref().and_then(|f| median(&f.values()));
    let fastai_ratio = match (lr, fastai_median) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some((a / b).max(b / a)),
        _ => None,
    };
    if let (Some(r), Some(m)) = (fastai_ratio, fastai_median) {
        if r > FASTAI_DISAGREEMENT {
            reasons.push(format!(
                "fastai's rules (median {}) disagree with this choice by {}×",
                fmt_num(m),
                fmt_num(r)
            ));
            if confidence == Confidence::Clear {
                confidence = Confidence::Weak;
            }
        }
    }

    let mut t = describe(&analysis, opts, "learning rate", "lr");
    match &fastai {
        Some(f) => {
            let parts: Vec<String> = [
                (f.steep, "steep"),
                (f.valley, "valley"),
                (f.minimum_div_10, "minimum/10"),
            ]
            .iter()
            .filter_map(|(v, n)| v.map(|v| format!("{} ({n})", fmt_num(v))))
            .collect();
            let agree = match fastai_ratio {
                Some(r) if r > FASTAI_DISAGREEMENT => format!(
                    "they disagree with mine by {}×, more than {}×",
                    fmt_num(r),
                    fmt_num(FASTAI_DISAGREEMENT)
                ),
                Some(r) if r < 1.5 => format!(
                    "their median ({}) essentially matches mine",
                    fmt_num(fastai_median.unwrap_or(f64::NAN))
                ),
                Some(r) => format!(
                    "their median ({}) is within a factor of {} of mine, inside {}×",
                    fmt_num(fastai_median.unwrap_or(f64::NAN)),
                    fmt_num(r),
                    fmt_num(FASTAI_DISAGREEMENT)
                ),
                None => "there is nothing of mine to compare them with".to_string(),
            };
            if !parts.is_empty() {
                t.push(format!(
                    "fastai's LR-finder rules on the heldout loss would pick {}; {agree}.",
                    join_and(&parts)
                ));
            }
        }
        None if lr.is_some() => t.push(
            "Without a usable heldout loss curve I could not ask fastai's rules for a second opinion."
                .into(),
        ),
        None => {}
    }
    t.push(match confidence {
        Confidence::Clear => "I am fairly confident in this choice.".to_string(),
        Confidence::Weak => format!(
            "Treat this suggestion as weak ({}); look at the plot before trusting it.",
            reasons.join("; ")
        ),
        Confidence::Undetermined => {
            "Without a learning rate the later steps cannot run as planned; check the red flags (is the model learning at all?).".to_string()
        }
    });

    LrDecision {
        lr,
        region: analysis.region.map(|r| Bounds {
            lo: r.lo.x,
            hi: r.hi.x,
        }),
        cliff_lr: analysis.cliff.map(|c| c.x),
        confidence,
        reasons,
        fastai,
        fastai_ratio,
        analysis,
        thoughts: t.join(" "),
    }
}

/// "a", "a and b", "a, b and c".
fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [a] => a.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decisions::common::MetricKind;
    use crate::decisions::ramp::{CliffKind, NoiseSource, RiseScale};

    /// LRs 1e-5 · 10^(i/4), i = 0..n: 4 epochs per decade.
    pub(crate) fn lrs(n: usize) -> Vec<f64> {
        (0..n).map(|i| 1e-5 * 10f64.powf(i as f64 / 4.0)).collect()
    }

    /// A clean ramp of 24 epochs: flat at 0.1 until epoch 6, rising to
    /// 0.905 by epoch 15 with the largest step between epochs 10 and 11
    /// (in the metric's units; relative to the gap left, 11 → 12),
    /// flat at the top, then the cliff at epoch 18 (falls to 0.5). Three
    /// seeds with ±0.01 offsets (σ = 0.01); losses mirror the metric.
    pub(crate) fn clean_ramp() -> RampInput {
        let base = [
            0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.12, // flat
            0.15, 0.25, 0.40, 0.65, 0.80, 0.87, 0.89, // rise, raw steepest 10→11
            0.905, 0.91, 0.905, // top
            0.50, 0.20, 0.15, 0.12, 0.10, 0.10, // cliff
        ];
        let x = lrs(base.len());
        let offs = [-0.01, 0.0, 0.01];
        let metric = offs
            .iter()
            .map(|o| base.iter().map(|b| b + o).collect())
            .collect();
        let loss = offs
            .iter()
            .map(|o| base.iter().map(|b| 2.5 * (1.0 - b) + o).collect())
            .collect();
        RampInput {
            x,
            metric,
            loss,
            diverged_at: vec![],
        }
    }

    #[test]
    fn clean_ramp_chooses_the_steepest_lr_in_the_steady_region() {
        let input = clean_ramp();
        let d = choose_lr(&input, &RampOptions::lr(MetricKind::Accuracy));
        let a = &d.analysis;
        assert_eq!(a.noise_source, NoiseSource::BetweenSeeds);
        assert!((a.noise.unwrap() - 0.01).abs() < 1e-9);
        let cliff = a.cliff.unwrap();
        assert_eq!((cliff.index, cliff.kind), (18, CliffKind::Fall));
        let r = a.region.unwrap();
        // lo: last epoch within σ of the floor (0.10 → ≤ 0.11): epoch 6
        // (epoch 7 is 0.12). hi: first epoch within σ of the top (0.91 →
        // ≥ 0.90): epoch 15 (epoch 14 is 0.89).
        assert_eq!((r.lo.index, r.hi.index), (6, 15));
        // Accuracy has a ceiling, so a step's rise is the share of the gap
        // to 1 it closed. Smoothed with [1,2,1]/4 the mean reads 0.425,
        // 0.625, 0.78, 0.8575 at epochs 10-13: step 11 → 12 closes 41 % of
        // the gap (10 → 11: 35 %, 12 → 13: 35 %), the most of any step.
        assert_eq!(a.rise_scale, RiseScale::Shortfall);
        assert_eq!(a.chosen.unwrap().index, 12);
        assert!((a.chosen_closed.unwrap() - 0.413).abs() < 1e-3, "{a:?}");
        assert_eq!(d.lr, Some(input.x[12]));
        assert_eq!(d.region.unwrap().lo, input.x[6]);
        assert_eq!(d.cliff_lr, Some(input.x[18]));
        assert_eq!(d.confidence, Confidence::Clear, "{:?}", d.reasons);
        let f = d.fastai.as_ref().unwrap();
        assert_eq!(f.values().len(), 3);
        assert!(d.fastai_ratio.unwrap() <= FASTAI_DISAGREEMENT);
        assert!(d.thoughts.contains("steepest"), "{}", d.thoughts);
        assert!(
            d.thoughts.contains("closed 41% of the gap"),
            "{}",
            d.thoughts
        );
        assert!(d.thoughts.contains("fastai"), "{}", d.thoughts);
        assert!(d.thoughts.contains("fell off the cliff"), "{}", d.thoughts);
        // It stores as JSON and comes back (floats to within printing).
        let j = serde_json::to_string(&d).unwrap();
        let back: LrDecision = serde_json::from_str(&j).unwrap();
        assert_eq!(
            (back.thoughts, back.confidence),
            (d.thoughts.clone(), d.confidence)
        );
        assert!((back.lr.unwrap() / d.lr.unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn noisy_flat_ramp_is_weak_or_undetermined() {
        // Three seeds of pure noise around 0.1 (deterministic pattern).
        let n = 20;
        let x = lrs(n);
        let noise = |s: usize, i: usize| ((i * 7 + s * 3) % 5) as f64 * 0.01 - 0.02;
        let metric: Vec<Vec<f64>> = (0..3)
            .map(|s| (0..n).map(|i| 0.1 + noise(s, i)).collect())
            .collect();
        let d = choose_lr(
            &RampInput {
                x,
                metric,
                ..Default::default()
            },
            &RampOptions::lr(MetricKind::Accuracy),
        );
        assert_ne!(d.confidence, Confidence::Clear, "{}", d.thoughts);
        assert!(!d.reasons.is_empty());
        assert!(d.fastai.is_none());
        assert!(
            d.thoughts.contains("noise") || d.thoughts.contains("never rose"),
            "{}",
            d.thoughts
        );
    }

    #[test]
    fn small_rise_in_noise_is_weak() {
        // A rise of 2σ with seeds spread ±σ: above the region threshold but
        // below 3× the noise.
        let n = 16;
        let base: Vec<f64> = (0..n)
            .map(|i| {
                if i < 8 {
                    0.5
                } else if i < 12 {
                    0.52
                } else {
                    0.3
                }
            })
            .collect();
        let metric: Vec<Vec<f64>> = [-0.01, 0.0, 0.01]
            .iter()
            .map(|o| base.iter().map(|b| b + o).collect())
            .collect();
        let d = choose_lr(
            &RampInput {
                x: lrs(n),
                metric,
                ..Default::default()
            },
            &RampOptions::lr(MetricKind::Accuracy),
        );
        assert_eq!(d.confidence, Confidence::Weak, "{}", d.thoughts);
        assert!(d.lr.is_some());
        assert!(d.reasons[0].contains("mostly noise"), "{:?}", d.reasons);
    }

    #[test]
    fn early_divergence_is_the_cliff() {
        let mut input = clean_ramp();
        // Seed 1's loss becomes NaN at epoch 12: the cliff is there, the
        // top is what came before.
        input.loss[1][12] = f64::NAN;
        let d = choose_lr(&input, &RampOptions::lr(MetricKind::Accuracy));
        let c = d.analysis.cliff.unwrap();
        assert_eq!((c.index, c.kind), (12, CliffKind::Divergence));
        assert_eq!(d.analysis.usable_points, 12);
        assert_eq!(d.analysis.divergence, vec![None, Some(12), None]);
        // The region runs up to the cliff (epochs 6..=11); epoch 11, still
        // rising when a seed diverged, is left out: the steepest of the
        // rest is epoch 10.
        assert!(d.analysis.edge_excluded);
        assert_eq!(d.analysis.region.unwrap().hi.index, 11);
        assert_eq!(d.lr, Some(input.x[10]));
        assert!(
            d.thoughts.contains("last one before the cliff"),
            "{}",
            d.thoughts
        );
        assert!(d.thoughts.contains("diverged"), "{}", d.thoughts);

        // Reported divergence at epoch 0: nothing usable.
        let mut input = clean_ramp();
        input.diverged_at = vec![Some(0)];
        let d = choose_lr(&input, &RampOptions::lr(MetricKind::Accuracy));
        assert_eq!(d.confidence, Confidence::Undetermined);
        assert_eq!(d.lr, None);
        assert_eq!(d.cliff_lr, Some(input.x[0]));
        assert!(d.thoughts.contains("very first epoch"), "{}", d.thoughts);
        serde_json::from_str::<LrDecision>(&serde_json::to_string(&d).unwrap()).unwrap();
    }

    #[test]
    fn a_ramp_that_never_falls_is_weak() {
        let mut input = clean_ramp();
        for m in input.metric.iter_mut().chain(input.loss.iter_mut()) {
            m.truncate(15);
        }
        input.x.truncate(15);
        let d = choose_lr(&input, &RampOptions::lr(MetricKind::Accuracy));
        assert!(d.analysis.cliff.is_none());
        assert!(d.analysis.still_rising_at_end);
        assert_eq!(d.confidence, Confidence::Weak);
        assert!(
            d.thoughts.contains("did not reach the cliff"),
            "{}",
            d.thoughts
        );
    }

    #[test]
    fn disagreement_with_fastai_makes_the_choice_weak() {
        let mut input = clean_ramp();
        // A heldout loss that keeps falling until the very end: fastai's
        // rules then pick LRs far above ours.
        let n = input.x.len();
        // (It rises slightly first so that the valley is unambiguous.)
        input.loss = (0..3)
            .map(|_| {
                (0..n)
                    .map(|i| {
                        if i < 18 {
                            3.0 + 0.01 * i as f64
                        } else {
                            3.17 - (i - 17) as f64 * 0.4
                        }
                    })
                    .collect()
            })
            .collect();
        let d = choose_lr(&input, &RampOptions::lr(MetricKind::Accuracy));
        assert!(
            d.fastai_ratio.unwrap() > FASTAI_DISAGREEMENT,
            "{:?}",
            d.fastai
        );
        assert_eq!(d.confidence, Confidence::Weak);
        assert!(d.thoughts.contains("disagree"), "{}", d.thoughts);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let opts = RampOptions::lr(MetricKind::R2);
        let cases = [
            RampInput::default(),
            RampInput {
                x: vec![0.1],
                metric: vec![vec![0.5]],
                ..Default::default()
            },
            RampInput {
                x: vec![0.1, 1.0],
                metric: vec![],
                ..Default::default()
            },
            RampInput {
                x: vec![0.1, 1.0, 10.0],
                metric: vec![vec![f64::NAN, 0.5, 0.7]],
                ..Default::default()
            },
            RampInput {
                x: vec![0.0, 1.0, 10.0],
                metric: vec![vec![0.1, 0.5], vec![0.1, 0.6, 0.2]],
                loss: vec![vec![1.0]],
                diverged_at: vec![None, None, Some(1)],
            },
            RampInput {
                x: vec![f64::NAN, 1.0],
                metric: vec![vec![0.1, 0.5]],
                ..Default::default()
            },
        ];
        for c in &cases {
            let d = choose_lr(c, &opts);
            assert!(!d.thoughts.is_empty());
            assert!(d.lr.is_none() || d.confidence != Confidence::Undetermined);
            let j = serde_json::to_string(&d).unwrap();
            serde_json::from_str::<LrDecision>(&j).unwrap();
        }
    }

    #[test]
    fn regression_ramp_with_a_huge_crash_keeps_its_noise_scale() {
        // R² from −0.05 up to 0.6, then the cliff: R² of −10⁶ and worse.
        // The crash must not inflate the noise floor or the noise.
        let base = [
            -0.05, -0.05, -0.04, -0.05, 0.0, 0.1, 0.3, 0.45, 0.55, 0.6, 0.6, -1e6, -1e8,
        ];
        let metric: Vec<Vec<f64>> = [-0.01, 0.0, 0.01]
            .iter()
            .map(|o| base.iter().map(|b| b + o).collect())
            .collect();
        let x = lrs(base.len());
        let d = choose_lr(
            &RampInput {
                x: x.clone(),
                metric,
                ..Default::default()
            },
            &RampOptions::lr(MetricKind::R2),
        );
        assert!(d.analysis.noise.unwrap() < 0.02, "{:?}", d.analysis.noise);
        assert_eq!(d.analysis.cliff.unwrap().index, 11);
        // Smoothed, R² reads 0.125, 0.2875, 0.4375, 0.5375 at epochs 5-8:
        // in the metric's units 5 → 6 rises most (0.1625 against 0.15), but
        // 6 → 7 closes more of the gap to 1 (21 % against 19 %).
        assert_eq!(d.lr, Some(x[7]));
        assert_eq!(d.confidence, Confidence::Clear, "{:?}", d.reasons);
        assert!(d.thoughts.contains("heldout R²"), "{}", d.thoughts);
    }

    #[test]
    fn single_seed_uses_the_curve_roughness() {
        let input = clean_ramp();
        let one = RampInput {
            x: input.x.clone(),
            metric: vec![input.metric[1].clone()],
            loss: vec![input.loss[1].clone()],
            diverged_at: vec![],
        };
        let d = choose_lr(&one, &RampOptions::lr(MetricKind::Accuracy));
        assert!(matches!(
            d.analysis.noise_source,
            NoiseSource::CurveRoughness | NoiseSource::Floor
        ));
        assert_eq!(d.lr, Some(input.x[12]));
        assert!(d.thoughts.contains("1 seed"), "{}", d.thoughts);
    }

    #[test]
    fn linear_lr_ramp_uses_a_linear_axis() {
        let mut input = clean_ramp();
        input.x = (1..=input.x.len()).map(|i| i as f64 * 0.05).collect();
        let opts = RampOptions {
            axis: crate::decisions::common::Axis::Linear,
            ..RampOptions::lr(MetricKind::Other)
        };
        let d = choose_lr(&input, &opts);
        assert_eq!(d.lr, Some(input.x[11]));
        assert!(
            d.thoughts.contains("per unit of learning rate"),
            "{}",
            d.thoughts
        );
    }

    #[test]
    fn a_metric_without_a_ceiling_is_measured_in_its_own_units() {
        // The same clean ramp as an unbounded metric: the steepest rise in
        // its units is 10 → 11 (smoothed 0.425 → 0.625, the largest step).
        let input = clean_ramp();
        let d = choose_lr(&input, &RampOptions::lr(MetricKind::Other));
        assert_eq!(d.analysis.rise_scale, RiseScale::Metric);
        assert_eq!(d.analysis.chosen.unwrap().index, 11);
        assert_eq!(d.analysis.chosen_closed, None);
        assert!(
            d.thoughts.contains("per decade of learning rate"),
            "{}",
            d.thoughts
        );
    }

    /// The mean heldout accuracy of a real ramp (8×8 digits, MLP 64-64-10,
    /// SGD, batch 32, 3 seeds; `bench/digits`): lr 1e-4 → 10 over 10
    /// epochs, the cliff at 2.78.
    fn digits_ramp() -> RampInput {
        let x = [
            1e-4, 1e-4, 3.594e-4, 1.292e-3, 4.642e-3, 0.01668, 0.05995, 0.2154, 0.7743, 2.783,
        ];
        let seeds = [
            [
                0.0917, 0.0917, 0.0917, 0.0944, 0.1806, 0.5722, 0.8361, 0.9139, 0.9528, 0.1417,
            ],
            [
                0.1389, 0.1417, 0.1472, 0.1639, 0.2250, 0.5028, 0.8306, 0.9083, 0.9500, 0.1278,
            ],
            [
                0.0722, 0.0694, 0.0778, 0.1028, 0.2361, 0.5889, 0.8111, 0.9167, 0.9472, 0.2361,
            ],
        ];
        RampInput {
            x: x.to_vec(),
            metric: seeds.iter().map(|s| s.to_vec()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_ramp_from_an_untrained_model_is_not_chosen_at_its_start() {
        // In accuracy points the smoothed mean rises most while training at
        // lr 0.0167 (0.28 → 0.54): the model is learning its first
        // features, as it would at any workable LR. Measured against the gap
        // to 1, lr 0.215 (0.78 → 0.90, closing 55 % of what was left; lr
        // 0.06 closes 52 %) is the steepest; the last LR before the cliff
        // (0.774) is left out.
        let input = digits_ramp();
        let raw = choose_lr(
            &input,
            &RampOptions {
                scale: RiseScale::Metric,
                ..RampOptions::lr(MetricKind::Accuracy)
            },
        );
        assert_eq!(raw.lr, Some(input.x[5]));
        let d = choose_lr(&input, &RampOptions::lr(MetricKind::Accuracy));
        assert_eq!(d.lr, Some(input.x[7]), "{}", d.thoughts);
        assert!((d.analysis.chosen_closed.unwrap() - 0.548).abs() < 1e-3);
        assert!(d.analysis.edge_excluded);
        assert_eq!(d.cliff_lr, Some(input.x[9]));
        assert_eq!(d.confidence, Confidence::Clear, "{:?}", d.reasons);
        assert!(
            d.thoughts.contains("what was left to gain"),
            "{}",
            d.thoughts
        );
    }
}
