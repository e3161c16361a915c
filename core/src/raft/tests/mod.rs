//! Tests of the replica as a whole: data-driven scenarios and the seeded
//! randomized network with invariant checks.

mod garbage;
mod harness;
mod random;
mod scenarios;
