//! Step 3: momentum from a momentum ramp at the chosen LR, then the
//! confirmation (lr, μ) against (lr, 0).
//!
//! The ramp is analysed by exactly the rule of [`super::ramp`] on the
//! (momentum, heldout metric) curve, on a linear axis: the steady region
//! before the cliff, and inside it the momentum where the rise per unit of
//! momentum is steepest. The confirmation is a [`paired_comparison`] of the
//! final heldout metrics after N epochs; momentum is kept only if that
//! comparison adopts it, otherwise μ = 0.

use serde::{Deserialize, Serialize};

use super::common::{fmt_num, Confidence};
use super::compare::{paired_comparison, CompareOptions, PairedComparison};
use super::lr::Bounds;
use super::ramp::{analyze_ramp, describe, RampAnalysis, RampInput, RampOptions};

/// The momentum decision from the ramp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MomentumDecision {
    /// The chosen momentum (`None` when undetermined: keep μ = 0).
    pub momentum: Option<f64>,
    /// The learning rate the ramp ran at.
    pub lr: f64,
    pub region: Option<Bounds>,
    /// The momentum at the cliff, if the ramp reached it.
    pub cliff_momentum: Option<f64>,
    pub confidence: Confidence,
    pub reasons: Vec<String>,
    pub analysis: RampAnalysis,
    pub thoughts: String,
}

/// Chooses μ from a momentum ramp run at `lr`. `opts` is usually
/// [`RampOptions::momentum`] (linear axis).
pub fn choose_momentum(input: &RampInput, lr: f64, opts: &RampOptions) -> MomentumDecision {
    let analysis = analyze_ramp(input, opts);
    let momentum = analysis.chosen.map(|c| c.x);
    let mut t = vec![format!(
        "At the chosen learning rate {}, I ramped momentum up epoch by epoch.",
        fmt_num(lr)
    )];
    t.extend(describe(&analysis, opts, "momentum", "μ"));
    t.push(match analysis.confidence {
        Confidence::Clear => format!(
            "Next I confirm it: train with (lr {}, μ {}) and with (lr {}, μ 0) and keep momentum only if it clearly helps.",
            fmt_num(lr),
            fmt_num(momentum.unwrap_or(f64::NAN)),
            fmt_num(lr)
        ),
        Confidence::Weak => format!(
            "Treat this choice as weak ({}); the confirmation run against μ = 0 will decide.",
            analysis.reasons.join("; ")
        ),
        Confidence::Undetermined => "So I would keep μ = 0 unless the confirmation run says otherwise.".to_string(),
    });
    MomentumDecision {
        momentum,
        lr,
        region: analysis.region.map(|r| Bounds {
            lo: r.lo.x,
            hi: r.hi.x,
        }),
        cliff_momentum: analysis.cliff.map(|c| c.x),
        confidence: analysis.confidence,
        reasons: analysis.reasons.clone(),
        analysis,
        thoughts: t.join(" "),
    }
}

/// The confirmation of momentum: the μ to use from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MomentumConfirmation {
    /// The μ to use: the tested one if it helps, else 0.
    pub momentum: f64,
    pub tested_momentum: f64,
    pub lr: f64,
    pub helps: bool,
    pub comparison: PairedComparison,
    pub thoughts: String,
}

/// Compares the final heldout metrics of (lr, μ) against (lr, 0), paired
/// by seed, with the rule of [`paired_comparison`].
pub fn confirm_momentum(
    lr: f64,
    momentum: f64,
    with_momentum: &[f64],
    without_momentum: &[f64],
    opts: &CompareOptions,
) -> MomentumConfirmation {
    let cand = format!("momentum {}", fmt_num(momentum));
    let comparison = paired_comparison(&cand, with_momentum, "no momentum", without_momentum, opts);
    let helps = comparison.adopt;
    let thoughts = format!(
        "At lr {}: {} {}",
        fmt_num(lr),
        comparison.thoughts,
        if helps {
            format!("Momentum does help here, so μ = {}.", fmt_num(momentum))
        } else {
            "Momentum does not clearly help here, so μ = 0.".to_string()
        }
    );
    MomentumConfirmation {
        momentum: if helps { momentum } else { 0.0 },
        tested_momentum: momentum,
        lr,
        helps,
        comparison,
        thoughts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::common::MetricKind;
    use crate::decisions::ramp::CliffKind;

    /// Momentum 0, 0.05, ..., 0.95 (20 epochs): flat at 0.6 up to μ = 0.3,
    /// rising fastest from μ = 0.5 to 0.55, topping out at 0.915 at 0.75,
    /// falling off the cliff at 0.9. Seeds ±0.01.
    fn momentum_ramp() -> RampInput {
        let x: Vec<f64> = (0..20).map(|i| i as f64 * 0.05).collect();
        let base = [
            0.60, 0.60, 0.60, 0.60, 0.60, 0.60, 0.60, // μ 0 .. 0.3
            0.63, 0.66, 0.70, 0.75, 0.85, 0.88, 0.90, 0.91, 0.915, 0.91, 0.91, // .. 0.85
            0.70, 0.40, // the cliff at 0.9
        ];
        let metric = [-0.01, 0.0, 0.01]
            .iter()
            .map(|o| base.iter().map(|b| b + o).collect())
            .collect();
        RampInput {
            x,
            metric,
            ..Default::default()
        }
    }

    #[test]
    fn momentum_ramp_chooses_the_steepest_momentum() {
        let input = momentum_ramp();
        let d = choose_momentum(&input, 0.1, &RampOptions::momentum(MetricKind::Accuracy));
        // Steps: .03 .03 .04 .05 .10 .03 .02 ...; smoothed with [1,2,1]/4
        // the step that closes the largest share of the gap to 1 is still
        // 0.75 → 0.85 (epoch 11, μ = 0.55).
        assert_eq!(d.analysis.chosen.unwrap().index, 11);
        assert!((d.momentum.unwrap() - 0.55).abs() < 1e-12);
        let c = d.analysis.cliff.unwrap();
        assert_eq!((c.index, c.kind), (18, CliffKind::Fall));
        assert!((d.cliff_momentum.unwrap() - 0.9).abs() < 1e-12);
        let r = d.region.unwrap();
        assert!(r.lo < 0.55 && r.hi > 0.55, "{r:?}");
        assert_eq!(d.confidence, Confidence::Clear, "{:?}", d.reasons);
        assert!(
            d.thoughts.contains("closed 29% of the gap"),
            "{}",
            d.thoughts
        );
        assert!(d.thoughts.contains("μ 0.55"), "{}", d.thoughts);
    }

    #[test]
    fn flat_momentum_ramp_keeps_zero() {
        let input = RampInput {
            x: vec![0.0, 0.3, 0.6, 0.9],
            metric: vec![vec![0.5, 0.5, 0.5, 0.5], vec![0.5, 0.5, 0.5, 0.5]],
            ..Default::default()
        };
        let d = choose_momentum(&input, 0.1, &RampOptions::momentum(MetricKind::Accuracy));
        assert_eq!(d.momentum, None);
        assert_eq!(d.confidence, Confidence::Undetermined);
        assert!(d.thoughts.contains("μ = 0"), "{}", d.thoughts);
        let d = choose_momentum(
            &RampInput::default(),
            0.1,
            &RampOptions::momentum(MetricKind::R2),
        );
        assert_eq!(d.momentum, None);
    }

    #[test]
    fn confirmation_keeps_momentum_only_if_it_helps() {
        let opts = CompareOptions {
            delta_min: 0.005,
            metric: MetricKind::Accuracy,
            ..Default::default()
        };
        let c = confirm_momentum(0.1, 0.7, &[0.90, 0.91, 0.92], &[0.85, 0.86, 0.88], &opts);
        assert!(c.helps);
        assert_eq!(c.momentum, 0.7);
        assert!(c.thoughts.contains("does help"), "{}", c.thoughts);
        let c = confirm_momentum(0.1, 0.7, &[0.86, 0.85, 0.88], &[0.85, 0.86, 0.88], &opts);
        assert!(!c.helps);
        assert_eq!((c.momentum, c.tested_momentum), (0.0, 0.7));
        assert!(c.thoughts.contains("μ = 0"), "{}", c.thoughts);
        let c = confirm_momentum(0.1, 0.7, &[], &[], &opts);
        assert_eq!(c.momentum, 0.0);
        serde_json::from_str::<MomentumConfirmation>(&serde_json::to_string(&c).unwrap()).unwrap();
    }
}
