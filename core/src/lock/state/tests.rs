//! Unit tests of each rule of the API contract, one scenario per test.
use super::*;
