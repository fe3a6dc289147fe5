//! The decisions of the procedure (SPEC §1), as pure functions on plain
//! data: no gRPC, no store. Each decision returns a serde-serialisable
//! struct holding its numbers and a one-paragraph plain-English
//! `thoughts` text (without the "Thoughts:" label), in the spirit of the
//! seed blog post: what was seen, what was chosen, why, how confident.
//!
//! | step | function | module |
//! |---|---|---|
//! | 1, 7 line searches | [`line_search_shape`] | [`landscape`] |
//! | 2 (and 6) LR ramp | [`choose_lr`] (+ fastai's [`fastai_suggestions`]) | [`lr`], [`fastai`] |
//! | 3 momentum ramp | [`choose_momentum`], [`confirm_momentum`] | [`momentum`] |
//! | 4 M | [`plateau_epoch`] | [`plateau`] |
//! | 3-6 comparisons | [`paired_comparison`], [`speed_comparison`], [`compare_runs`] | [`compare`] |
//! | red flags | `flag_*`, [`count_duplicate_rows`] | [`flags`] |
//!
//! The ramps share one rule, [`analyze_ramp`] in [`ramp`]. Inputs are
//! per-seed vectors aligned on x ([`SeedCurves`], [`RampInput`],
//! [`LineSearchInput`]); NaN/inf values are outcomes (divergence,
//! missing), never panics. Every number in an output is finite or `None`,
//! so decisions round-trip through JSON.

pub mod common;
pub mod compare;
pub mod fastai;
pub mod flags;
pub mod landscape;
pub mod lr;
pub mod momentum;
pub mod plateau;
pub mod ramp;

pub use common::{Axis, Confidence, MetricKind, SeedCurves};
pub use compare::{
    compare_runs, paired_comparison, speed_comparison, CompareOptions, PairedComparison,
    RunComparison, SpeedComparison,
};
pub use fastai::{fastai_suggestions, FastaiSuggestions};
pub use flags::{
    count_duplicate_row_sets, count_duplicate_rows, flag_divergence_at_small_lr,
    flag_heldout_overlap, flag_init_far_from_chance, flag_line_search_mismatch,
    flag_no_lr_improves, flag_single_class, flag_single_class_fraction,
    flag_train_good_heldout_chance, RedFlag,
};
pub use landscape::{
    line_search_shape, LineSearchInput, LineSearchKind, LineSearchOptions, LineSearchShape,
    TrainedFigure,
};
pub use lr::{choose_lr, Bounds, LrDecision};
pub use momentum::{choose_momentum, confirm_momentum, MomentumConfirmation, MomentumDecision};
pub use plateau::{plateau_epoch, PlateauDecision, PlateauOptions};
pub use ramp::{analyze_ramp, RampAnalysis, RampInput, RampOptions, RiseScale};
