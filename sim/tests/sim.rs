//! The simulation sweep, the regression list and single-seed replay, run by
//! `cargo sim` (madsim build). In a normal build this file is empty.
