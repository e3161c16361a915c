//! Proptest state-machine test against a separate reference model.
