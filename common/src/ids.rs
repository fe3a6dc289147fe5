//! Newtype identifiers, so a job id can never be passed where a task id is
//! expected. On the wire they are UUID strings; parsing names the field.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A string that should have been an id and was not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: `{value}` is not a valid id (expected a UUID)")]
pub struct BadId {
    pub field: &'static str,
    pub value: String,
}

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses the wire form, naming `field` when it is not an id.
            pub fn parse(field: &'static str, value: &str) -> Result<Self, BadId> {
                Uuid::parse_str(value.trim()).map(Self).map_err(|_| BadId {
                    field,
                    value: value.chars().take(80).collect(),
                })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                Self::parse(stringify!($name), s)
            }
        }
    };
}

id!(
    /// A submitted job.
    JobId
);
id!(
    /// One task of a job (a chunk of a run, or a block of line-search points).
    TaskId
);
id!(
    /// A registered worker.
    WorkerId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ones_name_their_field() {
        let j = JobId::new();
        assert_eq!(JobId::parse("job_id", &j.to_string()).unwrap(), j);
        let e = TaskId::parse("task_id", "nope").unwrap_err();
        assert_eq!(e.field, "task_id");
        assert!(e.to_string().contains("`nope`"));
    }
}
